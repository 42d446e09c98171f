"""Model families of other libraries, end to end: transformers (ViT, DETR, Conditional DETR, SegFormer),
segmentation_models_pytorch (a saved Unet folder, a one-logit FPN state dict) and anomalib (a PaDiM fitted by its
Engine) are saved as their libraries save them (random weights, small sizes), imported through the CLI and the HTTP
API, exported to ONNX and one more format, validated at batch 1 and 2, evaluated on generated labelled sets and
benchmarked. The graphs' post-processing is
checked against the libraries' own (``post_process_object_detection``, ``post_process_semantic_segmentation``);
refusals and broken folders leave the workspace as it was."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import streamlit as st
import torch
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from exporter import ExportRequest, Workspace, capabilities, export_checkpoint
from exporter.errors import FormatUnavailableError
from exporter.families import needs, read_source
from exporter.formats import get_available_formats, get_format
from exporter.pipeline import build_from
from exporter.service import benchmark_export
from exporter.store import find_export
from testkit.families import CLASSES, SIZE, fit_anomalib, save_family_models
from testkit.server import running_server, wait_for
from tests.conftest import ROOT
from tests.helpers import cli

BENCH = {"batch_sizes": "1", "seconds": 0.2, "threads": 1}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_family_models(tmp_path_factory.mktemp("families"))


def zipped(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{folder.name}/{path.name}")
    return target


# -- generated labelled sets in each task's layout ------------------------------------------------------------
def _shape_image(rng: np.random.Generator, kind: int) -> tuple[Image.Image, list[float]]:
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(0, 80, 3)))
    x, y = (int(v) for v in rng.integers(4, SIZE - 28, 2))
    box = [x, y, x + 24, y + 24]
    draw = ImageDraw.Draw(image)
    fill = tuple(int(v) for v in rng.integers(150, 255, 3))
    if kind == 0:
        draw.ellipse(box, fill=fill)
    elif kind == 1:
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x, y + 24), (x + 12, y), (x + 24, y + 24)], fill=fill)
    return image, box


def labelled_set(task: str, folder: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}
    for i in range(count):
        kind = i % len(CLASSES)
        image, box = _shape_image(rng, kind)
        if task == "classification":
            (folder / CLASSES[kind]).mkdir(parents=True, exist_ok=True)
            image.save(folder / CLASSES[kind] / f"{i}.png")
            continue
        (folder / "images").mkdir(parents=True, exist_ok=True)
        image.save(folder / "images" / f"{i}.png")
        if task == "segmentation":
            (folder / "masks").mkdir(exist_ok=True)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[box[1]:box[3], box[0]:box[2]] = 1  # foreground (a class of every model here)
            Image.fromarray(mask).save(folder / "masks" / f"{i}.png")
        else:
            coco["images"].append({"id": i, "file_name": f"{i}.png", "width": SIZE, "height": SIZE})
            coco["annotations"].append({"id": i, "image_id": i, "category_id": kind, "iscrowd": 0, "area": 576,
                                        "bbox": [box[0], box[1], 24, 24],
                                        "segmentation": [[box[0], box[1], box[2], box[1], box[2], box[3], box[0],
                                                          box[3]]]})
    if task in ("object_detection", "instance_segmentation"):
        (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def exported(ws: Path, project: str, experiment: str, fmt: str, **options):
    record = export_checkpoint(Workspace(ws), ExportRequest(project, experiment, format=fmt, options=options))
    assert record.status == "completed", record.error
    assert record.validation.passed, record.validation
    assert record.validation.batch_sizes == [1, 2]
    return record


def assert_evaluated_and_benchmarked(ws: Path, record) -> None:
    """Evaluated on the attached set, PyTorch and the file within 0.005 of each other (fp32: the same function),
    and timed beside PyTorch eager."""
    evaluation = record.evaluation
    assert evaluation and evaluation.status == "completed" and evaluation.dataset["images"] > 0, evaluation
    key = evaluation.primary_metric
    assert abs(evaluation.pytorch[key] - evaluation.file[key]) <= 0.005, evaluation
    timed = benchmark_export(Workspace(ws), record.id, BENCH).benchmarks[-1]
    assert timed.status == "completed", timed.error
    assert set(timed.results) == {"file", "pytorch"}


# -- post-processing equals the libraries' own -------------------------------------------------------------------
def _built(folder: Path, **options):
    imported = read_source(folder, None, {})
    return build_from(imported.hyper_parameters, {}, imported.state_dict, options=options)


@pytest.mark.parametrize("name", ["detr", "cond-detr"])
def test_detection_graph_is_the_processors_post_processing(saved, name):
    """Softmax (DETR) and sigmoid top-k (Conditional DETR) scoring: the wrapped graph's padded detections are
    ``post_process_object_detection``'s, best first, boxes in input pixels."""
    import transformers as hf

    spec, module = _built(saved / name, score_threshold=0.05, max_detections=20)
    images = torch.rand(2, 3, SIZE, SIZE)
    boxes, scores, labels, count = module(images)
    processor = hf.AutoImageProcessor.from_pretrained(saved / name)
    model = module.model
    normalised = (images - torch.tensor(processor.image_mean).view(1, 3, 1, 1)) / torch.tensor(
        processor.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        top_k = {"top_k": 20} if name == "cond-detr" else {}  # its top-k over query × class pairs: our D
        reference = processor.post_process_object_detection(model(pixel_values=normalised), threshold=0.05,
                                                            target_sizes=[(SIZE, SIZE)] * 2, **top_k)
    for i, want in enumerate(reference):
        n = int(count[i])
        assert n == len(want["scores"]) > 0
        assert (scores[i, :n].diff() <= 0).all()  # best first
        got = rows(scores[i, :n], labels[i, :n], boxes[i, :n])
        np.testing.assert_allclose(got, rows(want["scores"], want["labels"], want["boxes"]), atol=1e-4)
        assert (labels[i, n:] == -1).all() and (scores[i, n:] == 0).all()


def rows(scores, labels, boxes) -> np.ndarray:
    """Detections as ``[score, label, x1, y1, x2, y2]`` rows in one order (ties in score broken by the rest)."""
    table = torch.cat([scores[:, None], labels[:, None].float(), boxes], 1).detach().numpy().astype(np.float64)
    return table[np.lexsort(table.T[::-1])]


@pytest.mark.parametrize("name", ["segformer", "mask2former"])
def test_segmentation_graph_is_the_processors_post_processing(saved, name):
    """SegFormer's logits upsampled, Mask2Former's class probabilities × mask sigmoids summed over queries: the
    graph's scores and mask are ``post_process_semantic_segmentation``'s at the input size."""
    import transformers as hf

    _, logits_module = _built(saved / name)
    _, mask_module = _built(saved / name, output="mask")
    images = torch.rand(2, 3, SIZE, SIZE)
    processor = hf.AutoImageProcessor.from_pretrained(saved / name)
    scored = {"return_segmentation_scores": True} if name == "mask2former" else {}
    with torch.no_grad():
        want = processor.post_process_semantic_segmentation(logits_module.model(pixel_values=images),
                                                            target_sizes=[(SIZE, SIZE)] * 2, **scored)
        (logits,), (mask,) = logits_module(images), mask_module(images)
    assert logits.shape == (2, len(CLASSES), SIZE, SIZE)
    if name == "mask2former":
        torch.testing.assert_close(logits, torch.stack([w["segmentation_scores"] for w in want]))
        want = [w["segmentation"] for w in want]
    assert torch.equal(mask.long(), torch.stack(want))


def test_mask2former_instances_are_the_processors_post_processing(saved):
    """As instance segmentation, Mask2Former's file holds ``post_process_instance_segmentation``'s segments — the
    same labels, scores and binary masks at the input size — best first and padded; boxes are the masks' extents."""
    import transformers as hf

    imported = read_source(saved / "mask2former", None, {})
    hp = {**imported.hyper_parameters, "task": "instance_segmentation"}
    _, module = build_from(hp, {}, imported.state_dict, options={"score_threshold": 0.02, "max_detections": 12})
    images = torch.rand(2, 3, SIZE, SIZE)
    processor = hf.AutoImageProcessor.from_pretrained(saved / "mask2former")
    with torch.no_grad():
        want = processor.post_process_instance_segmentation(module.model(pixel_values=images), threshold=0.02,
                                                            target_sizes=[(SIZE, SIZE)] * 2, return_binary_maps=True)
        boxes, scores, labels, count, masks = module(images)
    assert masks.shape == (2, 12, SIZE, SIZE) and masks.dtype == torch.uint8
    for i, image in enumerate(want):
        n = int(count[i])
        assert n == len(image["segments_info"]) > 0
        order = sorted(range(n), key=lambda j: -image["segments_info"][j]["score"])
        np.testing.assert_allclose(scores[i, :n], [image["segments_info"][j]["score"] for j in order], atol=1e-5)
        assert labels[i, :n].tolist() == [image["segments_info"][j]["label_id"] for j in order]
        assert torch.equal(masks[i, :n].bool(), image["segmentation"][order].bool())
        assert (labels[i, n:] == -1).all() and (masks[i, n:] == 0).all()
        for box, mask in zip(boxes[i, :n], masks[i, :n], strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # the other mask options: probabilities, and a stricter threshold that covers fewer pixels, within the others
    options = {"score_threshold": 0.02, "max_detections": 12}
    _, probable = build_from(hp, {}, imported.state_dict, options={**options, "masks": "probability"})
    _, strict = build_from(hp, {}, imported.state_dict, options={**options, "mask_threshold": 0.7})
    with torch.no_grad():
        probabilities, tighter = probable(images)[4], strict(images)[4]
    assert probabilities.dtype == torch.float32 and 0 <= probabilities.min() and probabilities.max() <= 1
    assert probabilities[0, int(count[0]):].abs().sum() == 0  # nothing in the padded slots
    covered, strictly_covered = masks.amax(1).bool(), tighter.amax(1).bool()  # per image: any mask's pixels
    assert not (strictly_covered & ~covered).any() and tighter.sum() < masks.sum()


# -- end to end --------------------------------------------------------------------------------------------------
def test_transformers_classifier_through_the_cli(saved, tmp_path):
    """A ViT folder imported and given a labelled set by the CLI; ONNX and TorchScript pass validation; the ONNX
    file is evaluated and benchmarked."""
    ws = tmp_path / "ws"
    done = cli("import", str(saved / "vit"), "--project", "hf", "--create-project", "--json", workspace=ws)
    assert done.returncode == 0, done.stderr
    experiment = json.loads(done.stdout)
    assert experiment["model"]["architecture"] == "hf/ViTForImageClassification"
    assert experiment["model"]["class_names"] == CLASSES and experiment["model"]["input_size"] == [3, SIZE, SIZE]
    assert experiment["model"]["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}  # the processor's
    assert cli("data", "add", str(labelled_set("classification", tmp_path / "val")), "--project", "hf",
               workspace=ws).returncode == 0
    record = exported(ws, "hf", experiment["id"], "onnx")
    assert_evaluated_and_benchmarked(ws, record)
    exported(ws, "hf", experiment["id"], "torchscript")


def test_smp_state_dict_through_the_cli(saved, tmp_path):
    """A one-logit FPN state dict with --architecture smp/FPN --option encoder=resnet18: two classes (background,
    foreground); ONNX logits and an OpenVINO mask pass; the mask file is evaluated."""
    ws = tmp_path / "ws"
    args = ["import", str(saved / "fpn-binary.pth"), "--project", "smp", "--create-project", "--architecture",
            "smp/FPN", "--input-size", f"3,{SIZE},{SIZE}", "--json"]
    refused = cli(*args, workspace=ws)
    assert refused.returncode != 0 and "--option encoder=<name>" in refused.stderr
    assert not (ws / "projects" / "smp").exists()
    done = cli(*args, "--option", "encoder=resnet18", workspace=ws)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)["model"]
    assert model["architecture"] == "smp/FPN" and model["class_names"] == ["background", "foreground"]
    exported(ws, "smp", "exp-fpn-binary", "onnx")
    attached = cli("data", "add", str(labelled_set("segmentation", tmp_path / "val")), "--project", "smp",
                   workspace=ws)
    assert attached.returncode == 0, attached.stderr
    record = exported(ws, "smp", "exp-fpn-binary", "openvino", output="mask")
    assert record.evaluation and record.evaluation.dataset["images"] == 6


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    ws = tmp_path_factory.mktemp("families-api") / "ws"
    (ws / "projects").mkdir(parents=True)
    with running_server(ws) as base, httpx.Client(base_url=base, timeout=120) as http:
        http.workspace = ws
        yield http


def _import(client, project: str, path: Path, **fields) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post(f"/api/projects/{project}/experiments", files={"file": (path.name, handle)},
                           data={"create_project": "true", **fields})


def _export(client, project: str, experiment: str, fmt: str, verdict: str = "passed", **options) -> dict:
    response = client.post("/api/export", json={"project_id": project, "experiment_id": experiment,
                                                "checkpoint": "best", "format": fmt, "options": options})
    assert response.status_code == 202, response.text
    record = wait_for(client, response.json()["id"], timeout=300)
    assert record["status"] == "completed" and record["validation"]["verdict"] == verdict, record
    if verdict == "passed":
        assert record["validation"]["batch_sizes"] == [1, 2]
    return record


def test_detr_and_smp_zips_through_the_api(client, saved, tmp_path):
    """Zipped save_pretrained folders uploaded to the API: a DETR (detections kept above 0.2, so random weights
    still find some) exports to ONNX and OpenVINO, is evaluated on a COCO set and benchmarked; ncnn refuses it for
    TopK — while ExecuTorch, which refuses torchvision's detectors for NMS, takes it (capabilities, not tasks);
    Core ML converts it (``new_ones`` mended; unverified: it cannot run on Linux); a zipped smp Unet exports to
    ONNX."""
    ws = client.workspace
    detr = _import(client, "hf-detection", zipped(saved / "detr", tmp_path / "detr.zip"))
    assert detr.status_code == 201, detr.text
    model = detr.json()["model"]
    assert model["architecture"] == "hf/DetrForObjectDetection" and model["class_names"] == CLASSES
    shutil.copytree(labelled_set("object_detection", tmp_path / "coco"), ws / "projects" / "hf-detection" / "data"
                    / "val")
    record = _export(client, "hf-detection", "exp-detr", "onnx", score_threshold=0.2)
    assert_evaluated_and_benchmarked(ws, find_export(Workspace(ws), record["id"])[1])
    _export(client, "hf-detection", "exp-detr", "openvino", score_threshold=0.2)
    _export(client, "hf-detection", "exp-detr", "coreml", verdict="unverified", score_threshold=0.2)
    refused = client.post("/api/export", json={"project_id": "hf-detection", "experiment_id": "exp-detr",
                                               "format": "ncnn", "options": {}})
    assert refused.status_code == 409 and "TopK" in refused.json()["error"]["message"], refused.text
    detr_needs = needs("object_detection", model)
    get_format("executorch").check_task("object_detection", {}, detr_needs)  # carried: no NMS in a DETR
    with pytest.raises(FormatUnavailableError, match="torchvision::nms"):
        get_format("executorch").check_task("object_detection", {}, None)  # torchvision's detectors: refused
    unet = _import(client, "smp-seg", zipped(saved / "unet", tmp_path / "unet.zip"), input_size=f"3,{SIZE},{SIZE}")
    assert unet.status_code == 201, unet.text
    assert unet.json()["model"]["architecture"] == "smp/Unet"
    _export(client, "smp-seg", "exp-unet", "onnx")


def test_segformer_through_the_api_exports_a_mask(client, saved, tmp_path):
    response = _import(client, "hf-segmentation", zipped(saved / "segformer", tmp_path / "segformer.zip"))
    assert response.status_code == 201, response.text
    _export(client, "hf-segmentation", "exp-segformer", "onnx", output="mask")
    _export(client, "hf-segmentation", "exp-segformer", "coreml", verdict="unverified")  # converts (int() mended)


def test_mask2former_through_the_api_evaluated_and_in_openvino(client, saved, tmp_path):
    """A zipped Mask2Former (semantic): ONNX scores evaluated on a generated mask set and benchmarked, and an
    OpenVINO mask; both validated at batch 1 and 2."""
    ws = client.workspace
    response = _import(client, "hf-mask2former", zipped(saved / "mask2former", tmp_path / "mask2former.zip"))
    assert response.status_code == 201, response.text
    model = response.json()["model"]
    assert model["architecture"] == "hf/Mask2FormerForUniversalSegmentation" and model["task"] == "segmentation"
    shutil.copytree(labelled_set("segmentation", tmp_path / "masks"), ws / "projects" / "hf-mask2former" / "data"
                    / "val")
    record = _export(client, "hf-mask2former", response.json()["id"], "onnx")
    assert_evaluated_and_benchmarked(ws, find_export(Workspace(ws), record["id"])[1])
    _export(client, "hf-mask2former", response.json()["id"], "openvino", output="mask")


def test_mask2former_as_instance_segmentation_through_the_cli(saved, tmp_path):
    """``--task instance_segmentation`` makes a Mask2Former folder an instance segmenter: ONNX (masks and boxes
    evaluated on a COCO set with polygons, benchmarked) and OpenVINO; the mask-pasting formats that refuse Mask R-CNN
    are not refused for it (no data-dependent loop: its masks are gathered)."""
    ws = tmp_path / "ws"
    done = cli("import", str(saved / "mask2former"), "--project", "m2f", "--create-project", "--task",
               "instance_segmentation", "--json", workspace=ws)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)["model"]
    assert model["task"] == "instance_segmentation" and model["class_names"] == CLASSES
    attached = cli("data", "add", str(labelled_set("instance_segmentation", tmp_path / "coco")), "--project", "m2f",
                   workspace=ws)
    assert attached.returncode == 0, attached.stderr
    record = exported(ws, "m2f", "exp-mask2former", "onnx", score_threshold=0.02)
    assert set(record.evaluation.file) >= {"mask_map", "box_map"}, record.evaluation
    assert_evaluated_and_benchmarked(ws, record)
    exported(ws, "m2f", "exp-mask2former", "openvino", score_threshold=0.02)
    assert capabilities.DATA_DEPENDENT_LOOP not in needs("instance_segmentation", model)


def test_what_a_format_cannot_carry_of_a_family_model_is_refused_before_anything_runs(saved, tmp_path):
    """Each conversion measured to fail on these models (make bench --only family-formats) is refused by the
    capability the model needs, with the reason, before an export starts: nothing is written. ExecuTorch carries
    Mask2Former with a fixed batch only, and says to turn dynamic_batch off."""
    ws = tmp_path / "ws"
    done = cli("import", str(saved / "mask2former"), "--project", "m2f", "--create-project", workspace=ws)
    assert done.returncode == 0, done.stderr
    dynamic = cli("export", "--project", "m2f", "--experiment", "exp-mask2former", "--format", "executorch",
                  workspace=ws)
    assert dynamic.returncode != 0 and "Turn dynamic_batch off" in dynamic.stderr, dynamic.stderr
    done = cli("import", str(saved / "cond-detr"), "--project", "cond", "--create-project", workspace=ws)
    assert done.returncode == 0, done.stderr
    for project, experiment, fmt, reason in (("m2f", "exp-mask2former", "coreml", "torch.meshgrid"),
                                             ("m2f", "exp-mask2former", "ncnn", "pnnx"),
                                             ("cond", "exp-cond-detr", "coreml", "in-place update")):
        with pytest.raises(FormatUnavailableError, match=f"this (segmentation|object_detection) model: .*{reason}"):
            export_checkpoint(Workspace(ws), ExportRequest(project, experiment, format=fmt))
    assert not list(ws.glob("projects/*/exports/*")), "a refused export wrote something"
    padim = {"architecture": "anomalib/Padim", "task": "anomaly_detection"}
    with pytest.raises(FormatUnavailableError, match="torch.where"):
        get_format("ncnn").check_task("anomaly_detection", {}, needs("anomaly_detection", padim))
    mask2former = Workspace(ws).project("m2f").experiment("exp-mask2former").model
    cards = {row["name"]: row for row in get_available_formats("segmentation", needs("segmentation", mask2former))}
    assert not cards["coreml"]["available"] and "torch.meshgrid" in cards["coreml"]["reason"]  # the Export page's
    assert cards["executorch"]["available"] and cards["onnx"]["available"]


@pytest.mark.parametrize(("break_it", "message"), [
    (lambda f: (f / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    (lambda f: (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()),
                                                          "id2label": {str(i): str(i) for i in range(5)}})),
     "other shapes"),
    (lambda f: (f / "model.safetensors").unlink(), "No weights beside config.json"),
    (lambda f: (f / "config.json").write_text(json.dumps({"model_type": "bert",
                                                          "architectures": ["BertForMaskedLM"]})),
     "not an image classifier"),
])
def test_a_broken_folder_is_refused_with_what_does_not_match(saved, tmp_path, break_it, message):
    folder = shutil.copytree(saved / "vit", tmp_path / "vit")
    break_it(folder)
    ws = tmp_path / "ws"
    done = cli("import", str(folder), "--project", "hf", "--create-project", workspace=ws)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert not (ws / "projects" / "hf").exists()
    assert not list(ws.glob(".uploads/family-*"))  # the scratch checkpoint went too


# -- anomalib -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def padim(tmp_path_factory) -> Path:
    return fit_anomalib(tmp_path_factory.mktemp("anomalib"))


def test_anomalib_padim_end_to_end_beside_anomalibs_own_export(padim, tmp_path, monkeypatch):
    """A PaDiM fitted by anomalib's Engine, imported by the CLI (its class read from its state dict), exported to
    ONNX and OpenVINO — anomalib's pre-processor, model and post-processor in the graph — and evaluated with
    anomalib's own threshold (0.5 after its normalisation), not one fitted on the set; both files, and anomalib's
    own exports of the same model (on the records: ``yardstick``), answer as anomalib's torch module does;
    TorchScript traces the Lightning module too (no "not attached to a `Trainer`"), and Core ML converts it (its
    never-computed pixel threshold, NaN, is stored as the image threshold that stands in for it)."""
    ws = tmp_path / "ws"
    done = cli("import", str(padim), "--project", "anomalib", "--create-project", "--json", workspace=ws)
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)["model"]
    assert model["architecture"] == "anomalib/Padim" and model["threshold"] == 0.5
    assert model["input_size"] == [3, 256, 256] and model["normalization"]["std"] == [1.0, 1.0, 1.0]
    attached = cli("data", "add", str(padim.parent / "val"), "--project", "anomalib", workspace=ws)
    assert attached.returncode == 0, attached.stderr
    onnx = exported(ws, "anomalib", "exp-padim", "onnx")
    assert onnx.evaluation.calibration == {"threshold": 0.5}
    assert_evaluated_and_benchmarked(ws, onnx)
    openvino = exported(ws, "anomalib", "exp-padim", "openvino")
    coreml = export_checkpoint(Workspace(ws), ExportRequest("anomalib", "exp-padim", format="coreml"))
    assert coreml.status == "completed" and coreml.validation.verdict == "unverified", coreml  # NaN threshold stored
    for record, how in ((onnx, "to_onnx"), (openvino, "to_openvino")):  # anomalib's own file beside ours
        yardstick = record.yardstick
        assert yardstick.status == "completed" and how in yardstick.exporter and yardstick.images == 4, yardstick
        assert [r["exporter"] for r in yardstick.rows] == ["anomalib", "AI Studio Export"]
        for row in yardstick.rows:
            assert row["max_diff_score"] < 1e-4 and row["max_diff_map"] < 1e-3 and row["size_mb"] > 0, row
    assert exported(ws, "anomalib", "exp-padim", "torchscript", evaluate=False).yardstick is None  # not anomalib's
    monkeypatch.setenv("AISTUDIO_WORKSPACE", str(ws))  # the Export page shows the two files side by side
    st.cache_data.clear()
    page = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    page.query_params["export"] = onnx.id
    page.session_state["project_id"] = "anomalib"
    page.run()
    assert not page.exception and any(m.value == "##### Beside anomalib's own export" for m in page.markdown)
    shown = next(d.value for d in page.dataframe if "max |diff| map" in d.value.columns)
    assert list(shown["exporter"]) == ["anomalib", "AI Studio Export"]


def test_anomalib_checkpoint_through_the_api(client, padim):
    response = _import(client, "anomalib-api", padim)
    assert response.status_code == 201, response.text
    assert response.json()["model"]["architecture"] == "anomalib/Padim"
    # its labelled set: realistic validation inputs (on noise, anomalib's normalised score saturates at 1)
    shutil.copytree(padim.parent / "val", client.workspace / "projects" / "anomalib-api" / "data" / "val")
    _export(client, "anomalib-api", response.json()["id"], "onnx")


@pytest.mark.parametrize(("image", "pixel", "matching", "want"), [
    (0.3, float("nan"), True, (0.3, 0.3)),  # fitted without masks: the image threshold stands in for the pixels'
    (float("nan"), 0.7, True, (0.7, 0.7)),  # and the other way round
    (0.3, 0.7, True, (0.3, 0.7)),  # both computed: kept
    (0.3, float("nan"), False, (0.3, float("nan"))),  # no matching: nothing stands in
    (float("nan"), float("nan"), True, (float("nan"), float("nan"))),  # none computed: the range's middle, later
])
def test_anomalib_thresholds_are_stored_as_the_post_processor_reads_them(image, pixel, matching, want):
    from anomalib.post_processing import PostProcessor

    from exporter.families.outputs import _resolve_thresholds

    post = PostProcessor(enable_threshold_matching=matching)
    post._image_threshold.fill_(image)
    post._pixel_threshold.fill_(pixel)
    before = (post.image_threshold.item(), post.pixel_threshold.item())
    _resolve_thresholds(post)
    stored = (post._image_threshold.item(), post._pixel_threshold.item())
    np.testing.assert_allclose(stored, want, rtol=1e-7)  # float32 buffers; NaN equals NaN here
    np.testing.assert_equal((post.image_threshold.item(), post.pixel_threshold.item()), before)


def _lightning_checkpoint(module: torch.nn.Module, path: Path) -> Path:
    """What a Lightning checkpoint holds for the importer: the module's state dict and its saved hyper-parameters
    (anomalib's own settings objects among them: Reverse Distillation keeps an enum)."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 0}, path)
    return path


@pytest.mark.parametrize(("name", "settings"), [
    ("Stfpm", {"backbone": "resnet18", "layers": ["layer1", "layer2"]}),
    ("ReverseDistillation", {"backbone": "resnet18", "layers": ["layer1", "layer2", "layer3"], "pre_trained": False}),
    ("EfficientAd", {"model_size": "small"}),
])
def test_anomalib_models_with_a_pretrained_network_import_offline_and_export(name, settings, tmp_path):
    """STFPM builds its teacher with ``pre_trained=True`` whatever it is told (a download an offline machine cannot
    make), Reverse Distillation's checkpoint pickles an anomalib enum (refused by a data-only load before), and
    EfficientAD fetches its teacher only when it fits (unfitted here — its statistics unset, which its own forward
    allows — fitted offline in `bench --only families`): each imports with no network — every weight from the
    checkpoint, strictly (the import builds the model and loads them) — and EfficientAD exports to ONNX equal to
    anomalib's torch module."""
    import anomalib.models

    from exporter.families.anomalib import no_pretrained_downloads
    from exporter.importer import ImportRequest, import_checkpoint

    torch.manual_seed(0)
    settings = {**settings, "evaluator": False}
    with no_pretrained_downloads():
        module = getattr(anomalib.models, name)(**settings).eval()
    checkpoint = _lightning_checkpoint(module, tmp_path / f"{name.lower()}.ckpt")
    ws = Workspace(tmp_path / "ws")
    experiment = import_checkpoint(ws, ImportRequest("anomalib", create_project=True), checkpoint)
    assert experiment["model"]["architecture"] == f"anomalib/{name}"
    if name != "EfficientAd":
        return  # their exports, fitted: `bench --only families` (the import is what a download or the enum broke)
    record = export_checkpoint(ws, ExportRequest("anomalib", experiment["id"], format="onnx"))
    assert record.status == "completed", record.error
    assert record.validation.batch_sizes == [1, 2] and record.validation.max_diff < 1e-4, record.validation
    maps = {o.name: o for o in record.validation.outputs}
    assert maps["anomaly_map"].reference_max > maps["anomaly_map"].reference_min  # a live map was compared
