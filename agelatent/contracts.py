"""The one check behind the framework's plug-in contracts (generators, perceptions): an object either has
every hook the framework calls, or the error names each one it lacks and what it is for."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["check_hooks"]


def check_hooks(obj: object, hooks: Mapping[str, str], role: str, base: str, supplies: str) -> None:
    """Raise ``TypeError`` naming every hook of ``hooks`` (name -> what it is for) that ``obj`` lacks;
    ``role`` says what ``obj`` is (``generator``), ``base`` the class to subclass and ``supplies`` what it
    brings."""
    missing = [name for name in hooks if not hasattr(obj, name)]
    if missing:
        needs = "; ".join(f"{name}: {hooks[name]}" for name in missing)
        raise TypeError(
            f"{role} {type(obj).__name__} lacks the hook(s) {missing} ({needs}); subclass {base}, which "
            f"supplies {supplies} (docs/extending.md)"
        )
