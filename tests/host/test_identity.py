"""The exact hardware identity: device-tree reading, the SKU key, diff, and the real GPU."""

from __future__ import annotations

import os
import re

import pytest

from app.host import probe_gpu
from app.host.identity import HardwareIdentity, identity_of, read_board
from app.host.probe import probe_host
from tests.helpers import fake_driver, orin, real_gpu_available

#: Real /proc/device-tree contents (NUL-separated, NUL-terminated) of three Orin devkits.
AGX_ORIN_64 = (b"nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0",
               b"NVIDIA Jetson AGX Orin Developer Kit\0")
ORIN_NX_16 = (b"nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0",
              b"NVIDIA Orin NX Developer Kit\0")
XAVIER_AGX = (b"nvidia,p2822-0000+p2888-0004\0nvidia,jetson-xavier\0nvidia,tegra194\0",
              b"Jetson-AGX\0")
OCI_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def device_tree(tmp_path, files):
    """A device tree laid out like a Jetson's: /proc/device-tree is a link to the real folder."""
    base = tmp_path / "sys" / "firmware" / "devicetree" / "base"
    base.mkdir(parents=True)
    compatible, model = files
    (base / "compatible").write_bytes(compatible)
    (base / "model").write_bytes(model)
    link = tmp_path / "device-tree"
    link.symlink_to(base, target_is_directory=True)
    return link


def test_reads_the_board_through_the_linked_folder(tmp_path):
    board, model = read_board(device_tree(tmp_path, AGX_ORIN_64))
    assert board == ("nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234")
    assert model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert read_board(tmp_path / "absent") == ((), "")


@pytest.mark.parametrize("plant", ["fifo", "symlink", "huge", "folder"])
def test_a_planted_property_is_ignored_not_followed_or_waited_on(tmp_path, plant):
    tree = tmp_path / "dt"
    tree.mkdir()
    (tree / "model").write_bytes(b"Jetson\0")
    target = tree / "compatible"
    if plant == "fifo":
        os.mkfifo(target)  # opening it for reading without O_NONBLOCK would hang forever
    elif plant == "symlink":
        (tmp_path / "elsewhere").write_bytes(b"nvidia,p3701-0005\0")
        target.symlink_to(tmp_path / "elsewhere")
    elif plant == "huge":
        target.write_bytes(b"nvidia,p3701-0005\0" * 1000)
    else:
        target.mkdir()
    assert read_board(tree) == ((), "Jetson")


def test_sku_keys_tell_orin_modules_apart():
    agx = orin()
    nx = orin(sm_count=8, total_memory=16_464_859_136,
              board=("nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"))
    nano8 = orin(sm_count=8, total_memory=7_990_000_000,
                 board=("nvidia,p3768-0000+p3767-0003", "nvidia,p3767-0003", "nvidia,tegra234"))
    assert agx.sku_key() == "sm87-16sm-64g-p3701-0005-jp6.2-trt10.3.0.30-tensorrt"
    assert nx.sku_key() == "sm87-8sm-16g-p3767-0000-jp6.2-trt10.3.0.30-tensorrt"
    assert nano8.sku_key() == "sm87-8sm-8g-p3767-0003-jp6.2-trt10.3.0.30-tensorrt"
    for identity in (agx, nx, nano8):
        assert OCI_TAG.fullmatch(identity.sku_key())
    # A build-number change is another SKU key: engines load only with the exact build.
    assert orin(backend_version="10.3.0.26").sku_key() != agx.sku_key()


def test_memory_class_is_the_nominal_module_size():
    gib = 1 << 30
    sizes = {61.4: 64, 30.6: 32, 15.3: 16, 7.4: 8, 3.3: 4, 139.8: 140, 64.0: 64, 64.1: 68}
    for reported, nominal in sizes.items():
        assert orin(total_memory=int(reported * gib)).memory_class_gib == nominal, reported
    assert orin(total_memory=0).memory_class_gib == 0


def test_keys_without_gpu_board_or_known_release_and_very_long_ones():
    cpu = HardwareIdentity(backend="onnxruntime", backend_version="1.20.1", machine="x86_64")
    assert cpu.sku_key() == "cpu-x86_64-jpnone-ort1.20.1-onnxruntime"
    dgpu = orin(board=(), board_model="", jetpack="none", l4t="", compute_capability="9.0",
                sm_count=132, total_memory=150_754_820_096, backend_version="")
    assert dgpu.sku_key() == "sm90-132sm-144g-jpnone-trtnone-tensorrt"
    odd = orin(board=("acme,robot board/rev 2!",), jetpack="l4t36.9.0")
    assert odd.sku_key() == "sm87-16sm-64g-acme-robot-board-rev-2-jpl4t36.9.0-trt10.3.0.30-tensorrt"
    xavier = orin(board=tuple(s.decode() for s in XAVIER_AGX[0].split(b"\0") if s))
    assert xavier.board_module == "p2888-0004"
    long_one = orin(backend_version="10." + "9" * 200)
    key = long_one.sku_key()
    assert len(key) == 128 and OCI_TAG.fullmatch(key)
    assert key != orin(backend_version="10." + "9" * 201).sku_key()
    assert key == long_one.sku_key()  # stable


def test_diff_names_what_differs():
    agx = orin()
    assert agx.diff(orin()) == []
    nx = orin(sm_count=8, total_memory=16_464_859_136, board=("nvidia,p3767-0000",))
    assert agx.diff(nx) == ["sm_count: 16 != 8", "memory_class_gib: 64 != 16",
                            "board_module: 'p3701-0005' != 'p3767-0000'"]
    # The same module on another carrier board is the same SKU.
    other_carrier = orin(board=("acme,carrier-1+p3701-0005", "nvidia,p3701-0005"))
    assert agx.diff(other_carrier) == []
    assert agx.diff(other_carrier, everything=True) == [
        "board: nvidia,p3737-0000+p3701-0005,nvidia,p3701-0005,nvidia,tegra234 != "
        "acme,carrier-1+p3701-0005,nvidia,p3701-0005"]
    # The exact byte count and the driver are informative: the same SKU, unless asked.
    same_sku = orin(total_memory=65_890_271_232 - 4096, cuda_driver=12080)
    assert agx.diff(same_sku) == []
    assert agx.diff(same_sku, everything=True) == [
        "total_memory: 65890271232 != 65890267136", "cuda_driver: 12060 != 12080"]


def test_as_dict_round_trip_and_bad_documents():
    agx = orin()
    doc = agx.as_dict()
    assert doc["sku_key"] == agx.sku_key() and doc["memory_class_gib"] == 64
    assert HardwareIdentity.from_dict(doc) == agx
    with pytest.raises(ValueError, match="not a JSON object"):
        HardwareIdentity.from_dict([1])
    with pytest.raises(ValueError, match="lacks 'sm_count'"):
        HardwareIdentity.from_dict({k: v for k, v in doc.items() if k != "sm_count"})
    with pytest.raises(ValueError, match="'sm_count' is not an int"):
        HardwareIdentity.from_dict({**doc, "sm_count": "16"})
    with pytest.raises(ValueError, match="'board' is not a list"):
        HardwareIdentity.from_dict({**doc, "board": "nvidia,p3701-0005"})


def test_identity_of_a_stand_in_orin_host(tmp_path, monkeypatch):
    """The probe with a stand-in driver (no GPU here), a real device-tree folder and a real
    (unimportable) tensorrt package declaring its full version."""
    import app.host.probe as probe

    package = tmp_path / "site" / "tensorrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("no libnvinfer here")\n'
                                         '__version__ = "10.3.0.30"\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path / "nolib"))
    monkeypatch.setattr(probe, "probe_gpu", lambda i: probe_gpu(i, fake_driver(sms=8, memory=16_464_859_136)))
    report = probe_host(need_gpu=True, env={"L4T_VERSION": "36.4.3"}, release_file=tmp_path / "x")
    identity = identity_of(report, "tensorrt", device_tree=device_tree(tmp_path, ORIN_NX_16))
    assert identity.sku_key() == "sm87-8sm-16g-p3767-0000-jp6.2-trt10.3.0.30-tensorrt"
    assert (identity.device_name, identity.cuda_driver, identity.board_model) == (
        "Orin (nvgpu)", 12060, "NVIDIA Orin NX Developer Kit")


@pytest.mark.gpu
@pytest.mark.skipif(not real_gpu_available(), reason="needs cuda-python and a CUDA GPU")
def test_real_gpu_identity():
    report = probe_host(need_gpu=True)
    identity = identity_of(report, "tensorrt")
    print(f"identity: {identity.as_dict()}")
    assert identity.sm_count > 0 and identity.total_memory > 0 and identity.compute_capability
    assert OCI_TAG.fullmatch(identity.sku_key())
