"""Reading and writing the images of paired datasets, with errors that name the file.

Every builder decodes through `decode` so that a corrupt, truncated, empty or oversized file
stops the build (or is skipped) with a message about that file instead of a bare PIL or
TensorFlow traceback deep inside tfds.

16 bits per sample are kept: PIL reads 16-bit gray losslessly but truncates 16-bit colour
(RGB, RGBA, gray + alpha) PNG and TIFF to 8 bits, so those are decoded and encoded by OpenCV
(PIL still reads the header: the size check, the bit depth, the EXIF orientation).
"""

import io
import os
import stat

import cv2
import numpy as np
from PIL import Image
from PIL import ImageOps

_PIL_MODE = {1: "L", 3: "RGB", 4: "RGBA"}

# PIL modes decoded as they are (H, W, C) uint8.
_NATIVE_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
# PIL modes first converted to a native one (colour spaces, palettes, premultiplied alpha).
_CONVERTED_MODES = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "CMYK": "RGB",
                    "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_PNG_GRAY_ALPHA = 4  # PNG colour types: 0 gray, 2 RGB, 4 gray + alpha, 6 RGBA.
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLES_PER_PIXEL = 258, 277
_EXIF_ORIENTATION = 0x0112
# No image of a paired dataset comes near this; a file past it (or a device, a growing file)
# is refused before it fills memory.
MAX_FILE_BYTES = 256 << 20


class BadImageError(ValueError):
  """A file that cannot be used as an image of a pair; the message names the file."""

  def __init__(self, name: str, reason: str):
    super().__init__(f"{name}: {reason}")
    self.name = name
    self.reason = reason


def decode(data: bytes, name: str) -> np.ndarray:
  """Decodes image bytes to (H, W, C) uint8, or uint16 for 16-bit files (gray or colour).

  Images larger than `PIL.Image.MAX_IMAGE_PIXELS` are refused (PIL only warns below twice
  that), so a decompression bomb never reaches memory.
  """
  if not data:
    raise BadImageError(name, "empty (zero-byte) file")
  try:
    with Image.open(io.BytesIO(data)) as image:
      limit = Image.MAX_IMAGE_PIXELS
      if limit and image.width * image.height > limit:
        raise BadImageError(
            name, f"refused: {image.width}x{image.height} pixels is more than "
            f"PIL.Image.MAX_IMAGE_PIXELS={limit} (possible decompression bomb)")
      if is_sixteen_bit_colour(image, data):
        return _decode_sixteen_bit_colour(data, image, name)
      image.load()
      return _to_array(image, name)
  except BadImageError:
    raise
  except Image.DecompressionBombError as e:
    raise BadImageError(name, f"refused as a decompression bomb: {e}") from None
  except Image.UnidentifiedImageError:
    raise BadImageError(name, "not an image (PIL cannot identify its format)") from None
  except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
    raise BadImageError(name, f"corrupt or truncated image ({e})") from None


def display_name(path) -> str:
  """A path as text that can always be printed and stored: a file name that is not UTF-8
  (os.fsdecode's surrogate escapes) shows its odd bytes as \\xNN."""
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_file(path, name: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> bytes:
  """The bytes of a regular file of at most `max_bytes`; anything else is a BadImageError.

  Opened without blocking and checked on the open descriptor: a named pipe would block the
  reader for ever, and a link to /dev/zero would be read until memory runs out.
  """
  name = name or display_name(path)
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
  except OSError as e:
    raise BadImageError(name, f"cannot read file ({e.strerror or e})") from None
  with os.fdopen(fd, "rb") as f:
    try:
      info = os.fstat(fd)
      if not stat.S_ISREG(info.st_mode):
        raise BadImageError(name, "not a regular file (a pipe, device or socket); only "
                            "regular files are read")
      if info.st_size > max_bytes:
        raise BadImageError(name, f"{info.st_size} bytes, more than the {max_bytes} an "
                            "image file may have")
      data = f.read(max_bytes + 1)
    except OSError as e:
      raise BadImageError(name, f"cannot read file ({e.strerror or e})") from None
  if len(data) > max_bytes:
    raise BadImageError(name, f"more than the {max_bytes} bytes an image file may have")
  return data


def read(path, name: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
  """Reads and decodes a regular file; unreadable files become BadImageError too."""
  name = name or display_name(path)
  return decode(read_file(path, name, max_bytes), name)


def is_sixteen_bit_colour(image: Image.Image, data: bytes) -> bool:
  """Whether an opened (not loaded) PNG or TIFF has 16-bit samples and more than one channel:
  the files PIL would truncate to 8 bits. `data` is the file's bytes (PNG keeps its bit
  depth in the IHDR chunk, which PIL does not expose)."""
  if image.format == "PNG":
    # Signature (8), chunk length (4), b"IHDR", width (4), height (4), bit depth, colour type.
    return (len(data) > 25 and data[12:16] == b"IHDR" and data[24] == 16
            and data[25] in (_PNG_GRAY_ALPHA, 2, 6))
  if image.format == "TIFF":
    bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return image.tag_v2.get(_TIFF_SAMPLES_PER_PIXEL, 1) > 1 and max(bits) == 16
  return False


def _decode_sixteen_bit_colour(data: bytes, image: Image.Image, name: str) -> np.ndarray:
  """(H, W, C) uint16 through OpenCV, channels in RGB(A) order; gray + alpha stays 2."""
  array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if array is None or array.dtype != np.uint16:
    raise BadImageError(name, "corrupt or truncated 16-bit image (OpenCV cannot decode it)")
  if array.ndim == 2:
    array = array[:, :, None]
  if array.shape[-1] == 3:
    array = array[..., ::-1]
  elif array.shape[-1] == 4:
    array = array[..., [2, 1, 0, 3]]
    if image.format == "PNG" and data[25] == _PNG_GRAY_ALPHA:  # OpenCV expands it to BGRA.
      array = array[..., [0, 3]]
  return np.ascontiguousarray(array)


def _to_array(image: Image.Image, name: str) -> np.ndarray:
  mode = image.mode
  if mode == "P":
    mode = "RGBA" if "transparency" in image.info else "RGB"
    image = image.convert(mode)
  elif mode in _CONVERTED_MODES:
    mode = _CONVERTED_MODES[mode]
    image = image.convert(mode)
  if mode in _NATIVE_MODES:
    array = np.asarray(image, dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], _NATIVE_MODES[mode])
  if mode in _SIXTEEN_BIT_MODES:
    array = np.asarray(image)
    if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
      raise BadImageError(name, f"{mode} image with values outside 0..65535")
    return array.astype(np.uint16)[:, :, None]
  raise BadImageError(name, f"unsupported image mode {image.mode!r}")


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
  """Lossless PNG of an (H, W, C) uint8 (C in 1..4) or uint16 (C in 1, 3, 4) array.

  Low compression: building is then bound by decoding, not zlib.
  """
  if array.dtype == np.uint16:
    if array.shape[-1] not in (1, 3, 4):
      raise ValueError(f"16-bit PNG needs 1, 3 or 4 channels, got shape {array.shape}")
    if array.shape[-1] > 1:  # PIL has no 16-bit colour modes; OpenCV writes BGR(A).
      bgr = array[..., [2, 1, 0, 3][:array.shape[-1]]]
      ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
      if not ok:
        raise ValueError(f"OpenCV could not encode shape {array.shape} uint16 as PNG")
      return buffer.tobytes()
    image = Image.fromarray(array[:, :, 0])
  else:
    modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    image = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
    if image.mode != modes[array.shape[-1]]:
      raise ValueError(f"cannot encode shape {array.shape} {array.dtype} as PNG")
  buffer = io.BytesIO()
  image.save(buffer, format="PNG", compress_level=compress_level)
  return buffer.getvalue()


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[-1, 1] floats (a network's output) to uint8, rounded."""
  return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_uint16(image: np.ndarray) -> np.ndarray:
  """[-1, 1] floats (a network's output) to uint16, rounded."""
  scaled = (np.asarray(image, np.float32) + 1.0) * 32767.5
  return np.clip(np.round(scaled), 0, 65535).astype(np.uint16)


def from_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """[-1, 1] floats to `dtype` (uint8 or uint16), the inverse of `to_float`."""
  if np.dtype(dtype) == np.uint16:
    return to_uint16(image)
  if np.dtype(dtype) == np.uint8:
    return to_uint8(image)
  raise ValueError(f"images are written as uint8 or uint16, not {np.dtype(dtype)}")


def write_png(path, array: np.ndarray, compress_level: int = 6) -> None:
  """Writes an (H, W, C) array as `encode_png` encodes it (path may be a file object)."""
  data = encode_png(array, compress_level)
  if hasattr(path, "write"):
    path.write(data)
  else:
    with open(path, "wb") as f:
      f.write(data)


def decode_png(data: bytes, dtype: np.dtype, channels: int) -> np.ndarray:
  """Decodes a PNG this package wrote (see `encode_png`) back to (H, W, channels)."""
  if np.dtype(dtype) == np.uint16 and channels > 1:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(array[..., [2, 1, 0, 3][:channels]])
  with Image.open(io.BytesIO(data)) as image:
    array = np.asarray(image).astype(dtype, copy=False)
  return array.reshape(array.shape[0], array.shape[1], channels)


def split_ab(ab: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Left half is A, right half is B (the official layout).

  An odd width loses its last column, so that A and B have the same size (the official
  code gives B one column more and lets the resize hide it).
  """
  width = ab.shape[1]
  if width < 2:
    raise BadImageError(name, f"{width} pixel(s) wide: not a side-by-side AB pair")
  half = width // 2
  return ab[:, :half], ab[:, half:2 * half]


def check_pair(a: np.ndarray, b: np.ndarray, name: str) -> None:
  """A and B must cover the same pixels, or crops and flips would not line up."""
  if a.shape[:2] != b.shape[:2]:
    raise BadImageError(
        name, f"A is {a.shape[0]}x{a.shape[1]} (HxW) but B is {b.shape[0]}x{b.shape[1]}; "
        "the two images of a pair must have the same size")


def to_channels(array: np.ndarray, channels: int) -> np.ndarray:
  """Converts between 1 (gray), 2 (gray+alpha), 3 (RGB) and 4 (RGBA) channels.

  Follows PIL's convert(): alpha is dropped (not composited), gray is ITU-R 601-2 luma,
  added alpha is opaque.
  """
  have = array.shape[-1]
  if have == channels:
    return array
  if channels not in (1, 2, 3, 4) or have not in (1, 2, 3, 4):
    raise ValueError(f"cannot convert {have} channels to {channels}")
  opaque = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1.0
  colour = array[..., :3] if have >= 3 else array[..., :1]
  alpha = array[..., have - 1:] if have in (2, 4) else None
  if channels in (1, 2) and colour.shape[-1] == 3:
    luma = colour.astype(np.float32) @ np.array([299, 587, 114], np.float32) / 1000.0
    if array.dtype.kind in "ui":
      luma = np.round(luma)
    colour = luma[..., None].astype(array.dtype)
  elif channels in (3, 4) and colour.shape[-1] == 1:
    colour = np.repeat(colour, 3, axis=-1)
  if channels in (2, 4):
    if alpha is None:
      alpha = np.full(array.shape[:-1] + (1,), opaque, array.dtype)
    return np.concatenate([colour, alpha], axis=-1)
  return colour


# EXIF orientation -> the numpy view that uprights the image (PIL's exif_transpose table).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


def read_image(path, sixteen_bit: bool = False) -> np.ndarray:
  """A file (or file object) as HxW or HxWxC, upright (EXIF orientation applied).

  uint8, except for 16-bit files (gray, gray + alpha, RGB, RGBA) with `sixteen_bit`, which
  keep every bit as uint16; without it they are rounded to 8 bits.
  """
  if hasattr(path, "read"):
    data = path.read()
  else:
    with open(path, "rb") as f:
      data = f.read()
  with Image.open(io.BytesIO(data)) as image:
    if is_sixteen_bit_colour(image, data):
      array = _decode_sixteen_bit_colour(data, image, str(path))
      array = np.ascontiguousarray(
          _ORIENT.get(image.getexif().get(_EXIF_ORIENTATION), lambda a: a)(array))
    else:
      image = ImageOps.exif_transpose(image)
      if image.mode not in _SIXTEEN_BIT_MODES:
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
          image = image.convert("RGBA")
        return np.asarray(image)
      array = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
  if sixteen_bit:
    return array
  return np.round(array / 257.0).astype(np.uint8)


def flatten_for_model(image: np.ndarray, channels: int) -> np.ndarray:
  """uint8 or uint16 HxW / HxWx{1,2,3,4} -> HxWx`channels` of the same dtype for a model:
  transparency is composited over white (what a person sees), where `to_channels` drops it
  as PIL's convert does."""
  image = np.asarray(image)
  if image.dtype not in (np.uint8, np.uint16):
    raise TypeError(f"images must be uint8 or uint16, got {image.dtype}")
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (2, 3, 4)):
    raise ValueError(f"expected an HxW or HxWx{{1,2,3,4}} image, got shape {image.shape}")
  if channels not in _PIL_MODE:
    raise ValueError(f"models with {channels} input channels are not supported (1, 3 or 4)")
  if image.dtype == np.uint16:
    return _flatten_sixteen_bit(image, channels)
  pil = Image.fromarray(image)
  if pil.mode in ("LA", "RGBA") and channels != 4:
    white = Image.new("RGBA", pil.size, (255, 255, 255, 255))
    pil = Image.alpha_composite(white, pil.convert("RGBA"))
  out = np.asarray(pil.convert(_PIL_MODE[channels]))
  return out[..., None] if out.ndim == 2 else out


def _flatten_sixteen_bit(image: np.ndarray, channels: int) -> np.ndarray:
  """`flatten_for_model` for uint16, in numpy (PIL has no 16-bit colour modes)."""
  image = image[..., None] if image.ndim == 2 else image
  if image.shape[-1] in (2, 4) and channels != 4:
    top = 65535.0
    alpha = image[..., -1:].astype(np.float64) / top
    colour = image[..., :-1].astype(np.float64) * alpha + top * (1.0 - alpha)
    image = np.round(colour).astype(np.uint16)
  return to_channels(image, channels)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bicubic resize of (H, W, C); 8-bit L/RGB goes through PIL exactly as officially.

  Other dtypes and channel counts are resized channel by channel in PIL's float mode
  (same kernel, no rounding to 8 bits).
  """
  if image.shape[:2] == (height, width):
    return image
  if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC))
    return out.reshape(height, width, image.shape[-1])
  channels = [
      np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
          (width, height), Image.Resampling.BICUBIC)) for c in range(image.shape[-1])]
  return np.stack(channels, axis=-1)


def to_float(image: np.ndarray, top: float | None = None) -> np.ndarray:
  """Scales [0, top] (default: the range of the stored dtype, 255 or 65535) to [-1, 1]."""
  top = float(np.iinfo(image.dtype).max) if top is None else top
  return np.clip(image.astype(np.float32) * (2.0 / top) - 1.0, -1.0, 1.0)


def resize_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """`resize`, rounded back to uint8 where it resized in float (RGBA, gray + alpha)."""
  out = resize(image, height, width)
  return out if out.dtype == np.uint8 else np.clip(np.round(out), 0, 255).astype(np.uint8)


def resize_integer(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """`resize` of a uint8 or uint16 image, rounded back to its dtype where it resized in float
  (16 bits, RGBA, gray + alpha); `resize_uint8` for uint8."""
  if image.dtype == np.uint8:
    return resize_uint8(image, height, width)
  out = resize(image, height, width)
  return np.clip(np.round(out), 0, np.iinfo(image.dtype).max).astype(image.dtype)
