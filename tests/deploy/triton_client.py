"""Run by Triton's own client in an environment of its own (tritonclient pins ml-dtypes below ours):

    python triton_client.py infer URL MODEL INPUTS.npy OUT.npz   golden inputs → the server's outputs (binary, JSON)
    python triton_client.py config CONFIG.pbtxt                   the config parsed with Triton's schema → JSON

Prints JSON on stdout.
"""

import json
import sys

import numpy as np


def infer(url: str, model: str, inputs: str, out: str) -> dict:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    meta = client.get_model_metadata(model)
    x = np.load(inputs)
    results = {}
    for binary in (True, False):
        tensor = httpclient.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        requested = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
        result = client.infer(model, [tensor], outputs=requested)
        results.update({f"{o['name']}{'' if binary else '.json'}": result.as_numpy(o["name"]) for o in meta["outputs"]})
    default = client.infer(model, [tensor])  # no outputs named: Triton's client asks for binary data
    results.update({f"{o['name']}.default": default.as_numpy(o["name"]) for o in meta["outputs"]})
    np.savez(out, **results)
    return {"live": client.is_server_live(), "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(model), "metadata": meta}


def config(path: str) -> dict:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    parsed = text_format.Parse(open(path).read(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(parsed, preserving_proto_field_name=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    print(json.dumps(infer(*args) if command == "infer" else config(*args)))
