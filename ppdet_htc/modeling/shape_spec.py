"""``ShapeSpec``: what a module tells the next one about its output (channels and stride)."""
from collections import namedtuple

ShapeSpec = namedtuple("ShapeSpec", ["channels", "height", "width", "stride"])
ShapeSpec.__new__.__defaults__ = (None, None, None, None)


def as_shape_list(input_shape):
    """A ShapeSpec or a list of them -> list (a ShapeSpec is itself a tuple, so check it first)."""
    if isinstance(input_shape, ShapeSpec):
        return [input_shape]
    return list(input_shape)


def in_channel_from(input_shape):
    """``from_config`` of heads that only need their input width: ``{"in_channel": C}`` of the first
    input, or ``{}`` when the caller passes no shape (then the YAML/default value stays)."""
    if input_shape is None:
        return {}
    return {"in_channel": as_shape_list(input_shape)[0].channels}
