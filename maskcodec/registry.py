"""Codec registry: look codecs up by name (``get_codec("dct", mask_size=128, n_components=256)``)."""

from __future__ import annotations

from typing import Callable, TypeVar

from .base import MaskCodec

_CODECS: dict[str, type[MaskCodec]] = {}

C = TypeVar("C", bound=type[MaskCodec])


def register_codec(name: str) -> Callable[[C], C]:
    """Class decorator that makes a codec available to ``get_codec`` under ``name``."""

    def decorate(cls: C) -> C:
        if name in _CODECS and _CODECS[name] is not cls:
            raise ValueError(f"a codec named {name!r} is already registered ({_CODECS[name].__name__})")
        cls.codec_name = name
        _CODECS[name] = cls
        return cls

    return decorate


def available_codecs() -> list[str]:
    """Names accepted by ``get_codec``, sorted."""
    return sorted(_CODECS)


def codec_class(name: str) -> type[MaskCodec]:
    """The codec class registered under ``name``."""
    try:
        return _CODECS[name]
    except KeyError:
        raise ValueError(
            f"unknown codec {name!r}; available codecs: {', '.join(available_codecs())}"
        ) from None


def get_codec(name: str, **params) -> MaskCodec:
    """Build the codec registered under ``name`` with hyper-parameters ``params``."""
    cls = codec_class(name)
    try:
        return cls(**params)
    except TypeError as err:
        valid = sorted(cls().get_params())
        raise ValueError(f"bad parameters for codec {name!r}: {err}; valid parameters: {valid}") from None
