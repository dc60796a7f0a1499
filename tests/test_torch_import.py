"""Official PyTorch checkpoints -> this project's networks, checked against torch's outputs.

The fixtures (tests/fixtures/make_torch_fixture.py, run once with torch) hold a tiny official
unet G (ngf 2, 5 levels, BatchNorm) in the zip and the legacy formats, an n_layers and a pixel
D, two ResNet Gs (ngf 2: resnet_6blocks with BatchNorm and dropout, resnet_9blocks with
InstanceNorm and none), and torch's outputs for fixed inputs. Nothing here imports torch.
"""

import os
import pickle
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

import configs.default as default_config
from pix2pix_jax.data import image_io
from pix2pix_jax.interop import safe_unpickle
from pix2pix_jax.interop import torch_import
from pix2pix_jax.interop import torch_pth
from pix2pix_jax.nn import models
from pix2pix_jax.serving import inference
from pix2pix_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "torch_pix2pix")
G_FILES = ("latest_net_G.pth", "latest_net_G_legacy.pth")


@pytest.fixture(scope="module")
def expected():
  with np.load(os.path.join(FIXTURES, "outputs.npz")) as f:
    out = {k: np.transpose(v, (0, 2, 3, 1)) for k, v in f.items()}  # NCHW -> NHWC
  out["input"] = out.pop("input_uint8_nchw").astype(np.float32) / 127.5 - 1.0
  return out


def _config(**architecture):
  c = default_config.base_config()
  c.data.crop_size, c.data.load_size = 32, 36
  sd = torch_pth.load_state_dict(os.path.join(FIXTURES, G_FILES[0]))
  return torch_import.model_config_from(sd, c, **architecture)


def test_architecture_is_read_from_the_state_dict():
  m = _config().model
  assert (m.ngf, m.input_nc, m.output_nc, m.num_downs, m.norm) == (2, 3, 3, 5, "batch")


def test_both_file_formats_hold_the_same_tensors():
  zipped, legacy = (torch_pth.load_state_dict(os.path.join(FIXTURES, f)) for f in G_FILES)
  assert list(zipped) == list(legacy)
  assert len(zipped) == 46 and "model.model.1.model.3.model.2.running_var" in zipped
  for k in zipped:
    np.testing.assert_array_equal(zipped[k], legacy[k])
  assert zipped["model.model.1.model.2.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("filename", G_FILES)
def test_generator_matches_torch(filename, expected):
  config = _config(net_g="unet_32", norm="batch")
  variables = torch_import.generator_from_torch(
      torch_pth.load_state_dict(os.path.join(FIXTURES, filename)), config.model)
  generator = models.make_generator(config.model)
  out = generator.apply(variables, expected["input"], train=False)
  np.testing.assert_allclose(out, expected["g_eval"], atol=1e-4)
  # Train mode (BatchNorm on the batch's statistics) agrees too.
  out, _ = generator.apply(variables, expected["input"], train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out, expected["g_train"], atol=1e-4)


@pytest.mark.parametrize("filename, net_d, n_layers, key", [
    ("latest_net_D.pth", "n_layers", 2, "d_basic_eval"),
    ("latest_net_D_pixel_legacy.pth", "pixel", 3, "d_pixel_eval")])
def test_discriminator_matches_torch(filename, net_d, n_layers, key, expected):
  config = _config(net_d=net_d, n_layers_d=n_layers, ndf=2)
  variables = torch_import.discriminator_from_torch(
      torch_pth.load_state_dict(os.path.join(FIXTURES, filename)), config.model)
  outputs = models.make_discriminator(config.model).apply(
      variables, expected["input"], expected["g_eval"], train=False)
  np.testing.assert_allclose(models.logits(outputs)[0], expected[key], atol=1e-4)


RESNETS = [("resnet_6blocks_batch", "resnet_6blocks", "batch", False),
           ("resnet_9blocks_instance", "resnet_9blocks", "instance", True)]


@pytest.fixture(scope="module")
def resnet_expected():
  with np.load(os.path.join(FIXTURES, "resnet_outputs.npz")) as f:
    out = {k: np.transpose(v, (0, 2, 3, 1)) for k, v in f.items()}
  out["input"] = out.pop("input_uint8_nchw").astype(np.float32) / 127.5 - 1.0  # 28 x 20
  return out


def _resnet_state_dict(name):
  return torch_pth.load_state_dict(os.path.join(FIXTURES, f"{name}_net_G.pth"))


@pytest.mark.parametrize("name, net_g, norm, no_dropout", RESNETS)
def test_resnet_generator_matches_torch(name, net_g, norm, no_dropout, resnet_expected):
  sd = _resnet_state_dict(name)
  config = torch_import.model_config_from(sd, default_config.base_config(), net_g=net_g,
                                          norm=norm, no_dropout=no_dropout)
  m = config.model
  assert (m.generator, m.norm, m.ngf, m.input_nc, m.output_nc) == (net_g, norm, 2, 3, 3)
  assert m.dropout_rate == (0.0 if no_dropout else 0.5)
  variables = torch_import.generator_from_torch(sd, m)
  x = resnet_expected["input"]
  out = models.make_generator(m).apply(variables, x, train=False)
  np.testing.assert_allclose(out, resnet_expected[f"{name}_eval"], atol=1e-4)
  # Train mode, without the dropout noise (torch's Dropout layers were in eval mode).
  m.dropout_rate = 0.0
  out, _ = models.make_generator(m).apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out, resnet_expected[f"{name}_train"], atol=1e-4)


def test_resnet_flags_are_checked():
  sd = _resnet_state_dict("resnet_6blocks_batch")  # Blocks with dropout.
  with pytest.raises(torch_import.ConversionError, match="generator is resnet_6blocks"):
    torch_import.model_config_from(sd, default_config.base_config(), net_g="resnet_9blocks")
  with pytest.raises(torch_import.ConversionError, match="have dropout layers; drop"):
    torch_import.model_config_from(sd, default_config.base_config(), no_dropout=True)
  no_dropout = _resnet_state_dict("resnet_9blocks_instance")
  with pytest.raises(torch_import.ConversionError, match="have no dropout layers; pass"):
    torch_import.model_config_from(no_dropout, default_config.base_config())
  with pytest.raises(torch_import.ConversionError, match="resnet_12blocks: only unet_<size>"):
    torch_import.model_config_from(sd, default_config.base_config(), net_g="resnet_12blocks")


def test_wrong_architecture_is_named():
  with pytest.raises(torch_import.ConversionError, match="unet_32"):
    _config(net_g="unet_256")
  with pytest.raises(torch_import.ConversionError, match="layers say batch"):
    _config(norm="instance")
  sd = torch_pth.load_state_dict(os.path.join(FIXTURES, "latest_net_D.pth"))  # n_layers 2
  deeper = _config(net_d="n_layers", n_layers_d=3, ndf=2)
  with pytest.raises(torch_import.ConversionError, match="model.9.running_mean.*not in"):
    torch_import.discriminator_from_torch(sd, deeper.model)
  shallower = _config(net_d="n_layers", n_layers_d=1, ndf=2)
  with pytest.raises(torch_import.ConversionError, match="model.5.bias.*not in"):
    torch_import.discriminator_from_torch(sd, shallower.model)
  extra = dict(sd, **{"model.9.weight": np.zeros((1, 1, 1, 1), np.float32)})
  with pytest.raises(torch_import.ConversionError, match=r"lacks: \['model.9.weight'\]"):
    torch_import.discriminator_from_torch(extra, _config(net_d="n_layers", n_layers_d=2,
                                                         ndf=2).model)
  wider = _config(net_d="n_layers", n_layers_d=2, ndf=4)
  with pytest.raises(torch_import.ConversionError, match="does not fit"):
    torch_import.discriminator_from_torch(sd, wider.model)


def test_data_parallel_prefix_is_stripped():
  sd = torch_pth.load_state_dict(os.path.join(FIXTURES, G_FILES[0]))
  prefixed = {"module." + k: v for k, v in sd.items()}
  config = _config()
  a = torch_import.generator_from_torch(sd, config.model)
  b = torch_import.generator_from_torch(prefixed, config.model)
  assert jax.tree.all(jax.tree.map(np.array_equal, a, b))


def test_truncated_file_is_refused(tmp_path):
  data = open(os.path.join(FIXTURES, G_FILES[1]), "rb").read()
  path = tmp_path / "truncated.pth"
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(torch_pth.PthFormatError, match="truncated"):
    torch_pth.load_state_dict(str(path))


def _code_running_pickle(marker):
  """protocol 2: GLOBAL posix.system, the command as argument, REDUCE: os.system(cmd)."""
  command = f"touch {marker}".encode()
  return (b"\x80\x02cposix\nsystem\nq\x00X" + len(command).to_bytes(4, "little") + command
          + b"\x85q\x01Rq\x02.")


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_code_in_the_pickle_is_refused_and_not_run(layout, tmp_path):
  marker = tmp_path / "code_ran"
  evil = _code_running_pickle(marker)
  path = tmp_path / "latest_net_G.pth"
  if layout == "zip":
    with zipfile.ZipFile(path, "w") as z:
      z.writestr("archive/data.pkl", evil)
      z.writestr("archive/version", "3\n")
  else:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        torch_pth.LEGACY_MAGIC_NUMBER, torch_pth.LEGACY_PROTOCOL_VERSION,
        {"protocol_version": 1001, "little_endian": True}))
    path.write_bytes(header + evil)
  with pytest.raises(safe_unpickle.UnsafePickleError, match=r"posix\.system.*arbitrary code"):
    torch_pth.load_state_dict(str(path))
  assert not marker.exists()


def test_converter_cli_writes_a_checkpoint_translate_reads(tmp_path, expected):
  out = tmp_path / "converted"
  result = subprocess.run(
      [sys.executable, "-m", "pix2pix_jax.interop.torch_import",
       f"--pth={os.path.join(FIXTURES, G_FILES[1])}",
       f"--pth_d={os.path.join(FIXTURES, 'latest_net_D.pth')}", "--netD=n_layers",
       "--n_layers_D=2", "--ndf=2", "--netG=unet_32", f"--output={out}",
       "--config.data.crop_size=32", "--config.data.load_size=36"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  config, variables = checkpoints.load_generator(str(out))
  assert config.model.num_downs == 5 and config.model.n_layers_d == 2
  image = image_io.to_uint8(expected["input"][0])
  out = inference.translate(config, variables, [image], eval_mode=True)[0]
  want = image_io.to_uint8(models.make_generator(config.model).apply(
      variables, image_io.to_float(image)[None], train=False)[0])
  np.testing.assert_array_equal(out, want)
  np.testing.assert_allclose(image_io.to_float(out), expected["g_eval"][0], atol=1.01 / 127.5)
