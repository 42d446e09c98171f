"""Safe checkpoint loading, prefix stripping and mismatch reporting."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import torchvision

from exporter.checkpoint import load_checkpoint, load_weights, strip_prefix
from exporter.errors import CheckpointError, StateDictMismatchError


class _PlantsFile:
    """Unpickling this would create a file: the loader must never do it."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _save(obj, path):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"this is not a checkpoint at all", "not a PyTorch checkpoint"),
])
def test_bad_bytes_fail_clearly(tmp_path, content, reason):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    good = _save({"state_dict": {"w": torch.ones(100)}}, tmp_path / "good.ckpt").read_bytes()
    path = tmp_path / "trunc.ckpt"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("raw_pickle", [False, True])
def test_code_carrying_pickle_is_refused_and_not_executed(tmp_path, raw_pickle):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.ones(1)}, "x": _PlantsFile(str(marker))}
    if raw_pickle:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    assert "weights_only" in info.value.message or "not a PyTorch checkpoint" in info.value.message


class Shapes(torch.nn.Module):  # a user's model class, named like no model
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 2)


class ResNet:  # a user's plain object (its settings), named like a model: not a module
    pass


def test_a_pickled_module_is_told_apart_by_what_its_pickle_names_not_by_its_class_name(tmp_path):
    module, other = tmp_path / "module.pt", tmp_path / "other.pt"
    torch.save(Shapes(), module)
    torch.save({"state_dict": Shapes().state_dict(), "config": ResNet()}, other)
    with pytest.raises(CheckpointError, match="pickled model object .* --model-code"):
        load_checkpoint(module)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(other)
    assert "pickled model object" not in info.value.message and "weights_only" in info.value.message


def test_a_libraries_enum_in_the_hyper_parameters_loads_and_nothing_else_does(tmp_path):
    """anomalib's Lightning checkpoints store some settings as its enums (Reverse Distillation's anomaly map mode):
    an Enum of an allowed library loads by value; a non-enum class of the same library, or an enum of another
    module, is still refused."""
    import http

    from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode
    from anomalib.post_processing import PostProcessor

    weights = {"w": torch.ones(1)}
    enum = _save({"state_dict": weights, "hyper_parameters": {"mode": AnomalyMapGenerationMode.ADD}},
                 tmp_path / "enum.ckpt")
    loaded = load_checkpoint(enum)
    assert loaded.hyper_parameters["mode"] is AnomalyMapGenerationMode.ADD and torch.equal(loaded.state_dict["w"],
                                                                                          weights["w"])
    for name, value in (("class", PostProcessor), ("other-enum", http.HTTPStatus.OK)):
        path = _save({"state_dict": weights, "hyper_parameters": {"x": value}}, tmp_path / f"{name}.ckpt")
        with pytest.raises(CheckpointError, match="weights_only"):
            load_checkpoint(path)


def test_non_dict_and_missing_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(_save([1, 2, 3], tmp_path / "list.ckpt"))
    with pytest.raises(CheckpointError, match="no state dict"):
        load_checkpoint(_save({"epoch": 3, "optimizer": {}}, tmp_path / "nosd.ckpt"))


@pytest.mark.parametrize("layout", ["lightning", "model", "bare"])
def test_accepted_layouts(tmp_path, layout):
    sd = torchvision.models.resnet18(num_classes=3).state_dict()
    obj = {"lightning": {"state_dict": sd, "hyper_parameters": {"task": "classification"}, "epoch": 4},
           "model": {"model": sd}, "bare": sd}[layout]
    ckpt = load_checkpoint(_save(obj, tmp_path / "c.ckpt"))
    assert set(ckpt.state_dict) == set(sd)
    assert len(ckpt.sha256) == 64
    assert (ckpt.epoch == 4) == (layout == "lightning")


@pytest.mark.parametrize("prefix", ["", "model.", "net.", "module.", "model.module."])
def test_prefix_is_stripped_when_it_matches(prefix):
    model = torchvision.models.resnet18(num_classes=3)
    sd = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    sd["criterion.weight"] = torch.ones(3)  # another submodule of a LightningModule
    stripped, used = strip_prefix(sd, set(model.state_dict()))
    assert used == prefix or (prefix == "" and used == "")
    assert load_weights(torchvision.models.resnet18(num_classes=3), {k: v for k, v in sd.items()
                                                                   if not k.startswith("criterion")}) == prefix


def test_wrong_num_classes_names_the_shape_clash():
    sd = torchvision.models.resnet18(num_classes=5).state_dict()
    with pytest.raises(StateDictMismatchError, match=r"fc.weight: checkpoint \[5, 512\] vs model \[10, 512\]"):
        load_weights(torchvision.models.resnet18(num_classes=10), sd)


def test_wrong_architecture_names_missing_and_unexpected_keys():
    sd = torchvision.models.resnet18(num_classes=5).state_dict()
    with pytest.raises(StateDictMismatchError, match="missing keys .*unexpected keys"):
        load_weights(torchvision.models.mobilenet_v2(num_classes=5), sd)


def test_real_pytorch_lightning_trainer_checkpoint(tmp_path):
    """A checkpoint written by Lightning's Trainer for a module holding ``self.model``."""
    pl = pytest.importorskip("pytorch_lightning")

    class Classifier(pl.LightningModule):
        def __init__(self, architecture="resnet18", num_classes=4, task="classification",
                     input_size=(3, 32, 32)):
            super().__init__()
            self.save_hyperparameters()
            self.model = torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,)))
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    module = Classifier()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    path = tmp_path / "lightning.ckpt"
    trainer.save_checkpoint(path)

    ckpt = load_checkpoint(path)
    assert ckpt.hyper_parameters["architecture"] == "resnet18"
    assert ckpt.epoch == 1
    model = torchvision.models.resnet18(num_classes=4)
    assert load_weights(model, ckpt.state_dict) == "model."
    assert torch.equal(model.fc.weight, module.model.fc.weight)
