"""StyleGAN / PGGAN ``.tfrecords`` (FFHQ, CelebA-HQ) read without TensorFlow.

One uncompressed file per resolution; every record is a ``tf.train.Example`` with features
``shape`` int64[3] and ``data`` (raw uint8, CHW). Records are located once, then read with
``os.pread`` (thread-safe), and parsed by a minimal protobuf decoder.
"""

import os
import weakref

import numpy as np

from score_sde_jax.data.source import Source, image_source


def tfrecord_offsets(path: str | os.PathLike) -> np.ndarray:
    """Byte offsets and lengths of the records of an uncompressed TFRecord file: int64 [N, 2].

    A record is: uint64 length, uint32 CRC of the length, ``length`` bytes, uint32 CRC. Only the
    headers are read (CRCs are not checked); a truncated file raises ValueError.
    """
    size = os.path.getsize(path)
    offsets = []
    with open(path, "rb") as f:
        position = 0
        while position < size:
            header = f.read(12)
            length = int.from_bytes(header[:8], "little") if len(header) == 12 else -1
            end = position + 12 + length + 4
            if length < 0 or end > size:
                raise ValueError(
                    f"{path} is truncated or not an uncompressed TFRecord file "
                    f"(record {len(offsets)} at byte {position})."
                )
            offsets.append((position + 12, length))
            position = end
            f.seek(position)
    return np.asarray(offsets, np.int64).reshape(-1, 2)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: memoryview):
    """(field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"Unsupported protobuf wire type {wire}.")
        yield key >> 3, wire, value


def parse_tf_example(record: bytes) -> dict[str, list]:
    """A serialized ``tf.train.Example`` -> {feature name: list of bytes / int / float}.

    Wire layout: Example.features (1) -> Features.feature (1, map entries key=1, value=2) ->
    Feature.{bytes_list=1, float_list=2, int64_list=3}, each a repeated ``value`` field 1.
    """
    features = {}
    for field, _, message in _proto_fields(memoryview(record)):
        if field != 1:
            continue
        for _, _, entry in _proto_fields(message):
            key, feature = "", memoryview(b"")
            for entry_field, _, value in _proto_fields(entry):
                if entry_field == 1:
                    key = bytes(value).decode()
                elif entry_field == 2:
                    feature = value
            features[key] = _parse_feature(feature)
    return features


def _parse_feature(feature: memoryview) -> list:
    values = []
    for kind, _, values_message in _proto_fields(feature):
        for _, wire, value in _proto_fields(values_message):
            if kind == 1:
                values.append(bytes(value))
            elif kind == 2:
                values.extend(np.frombuffer(value, "<f4").tolist())
            elif wire == 0:
                values.append(value - (1 << 64) if value >= 1 << 63 else value)
            else:  # packed int64 list
                pos = 0
                while pos < len(value):
                    v, pos = _varint(value, pos)
                    values.append(v - (1 << 64) if v >= 1 << 63 else v)
    return values


def source(name: str, config, path: str) -> Source:
    """The images of a StyleGAN / PGGAN ``.tfrecords`` file; ``data.image_size`` must match it."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"data.tfrecords_path {path} does not exist; {name} is read from the StyleGAN "
            "multi-resolution .tfrecords (e.g. ffhq-r08.tfrecords for 256 px, -r10 for 1024 px) "
            "or from an image folder given as data.path."
        )
    offsets = tfrecord_offsets(path)
    if len(offsets) == 0:
        raise ValueError(f"{path} holds no records.")
    fd = os.open(path, os.O_RDONLY)  # os.pread on one descriptor is thread-safe

    def read(i):
        start, length = offsets[i]
        features = parse_tf_example(os.pread(fd, int(length), int(start)))
        shape = features.get("shape")
        if not shape or len(shape) != 3 or "data" not in features:
            raise ValueError(f"{path} record {i} lacks the StyleGAN 'shape' / 'data' features.")
        chw = np.frombuffer(features["data"][0], np.uint8).reshape(shape)
        return chw.transpose(1, 2, 0), 0

    size = config.data.image_size

    def check_size(image):
        if image.shape[:2] != (size, size):
            raise ValueError(
                f"{path} holds {image.shape[0]} x {image.shape[1]} images but data.image_size="
                f"{size}; StyleGAN .tfrecords keep one file per resolution (-r08: 256, -r10: 1024)."
            )
        return image

    records = image_source(config, f"{name} {path}", len(offsets), read, check_size)
    weakref.finalize(records, os.close, fd)
    return records
