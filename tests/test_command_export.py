"""`slimnet export`: children as state dict, TorchScript and ONNX, through slimnet.cli.main."""
import json
import random

import pytest
import torch

from slimnet.checkpoint import load_supernet, save_checkpoint
from slimnet.cli import main
from slimnet.export import load_child

pytestmark = pytest.mark.fashion_mnist


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_export_child_torchscript_onnx(supernet_ckpt, tmp_path, capsys):
    out = tmp_path / "child"
    rc = main(["export", "--checkpoint", str(supernet_ckpt), "--width", "0.4", "--out", str(out), "--torchscript",
               "--onnx", "--calibrate-images", "100", "--device", "cpu"])
    text = capsys.readouterr().out
    if rc == 2 and "pip install slimnet[onnx]" in text:
        pytest.skip("onnx / onnxruntime not installed")
    assert rc == 0
    assert "MACs" in text and "latency" in text and "child" in text
    child = load_child(out / "child.pt")
    cfg_json = json.load(open(out / "child.json"))
    net, _ = load_supernet(supernet_ckpt)
    assert cfg_json["channels"] == dict(net.space.uniform(0.4).channels)
    # the same calibration as the tool (same seeded images) reproduces the child exactly
    assert main(["calibrate", "--checkpoint", str(supernet_ckpt), "--width", "0.4", "--images", "100",
                 "--out", str(tmp_path / "cal.pt")]) == 0
    cal, _ = load_supernet(tmp_path / "cal.pt")
    cal.eval().set_width(0.4)
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(child(x), cal(x), rtol=1e-5, atol=1e-5)
        ts = torch.jit.load(str(out / "child.ts"))
        torch.testing.assert_close(ts(x), child(x), rtol=0, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(out / "child.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    assert abs(got - child(x).detach().numpy()).max() <= 1e-4


def test_export_channels_file_and_errors(supernet_ckpt, switchable_ckpt, tmp_path, capsys):
    net, _ = load_supernet(supernet_ckpt)
    cfg = net.space.random(random.Random(1))
    cfg.save(tmp_path / "c.json")
    assert main(["export", "--checkpoint", str(supernet_ckpt), "--channels", str(tmp_path / "c.json"),
                 "--out", str(tmp_path / "o"), "--calibrate-images", "50", "--no-latency"]) == 0
    assert load_child(tmp_path / "o" / "child.pt").child_config == cfg
    capsys.readouterr()
    # switchable: a width outside its list
    assert main(["export", "--checkpoint", str(switchable_ckpt), "--width", "0.4", "--out", str(tmp_path / "s")]) == 2
    assert "switchable" in capsys.readouterr().err
    # a switchable width needs no calibration (no data)
    assert main(["export", "--checkpoint", str(switchable_ckpt), "--width", "0.25", "--out", str(tmp_path / "s"),
                 "--no-latency"]) == 0
    capsys.readouterr()
    # an uncalibrated universal config with no data known
    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, net)
    assert main(["export", "--checkpoint", str(bare), "--width", "0.4", "--out", str(tmp_path / "b")]) == 2
    assert "--data NAME" in capsys.readouterr().err
