"""The public API: what `import halomail` offers is exactly what __all__ lists."""

from __future__ import annotations

import halomail


def test_all_lists_every_public_name_and_is_sorted() -> None:
    """__all__ is sorted and names every public attribute of the package, no more, no less."""
    public = {
        name
        for name, value in vars(halomail).items()
        if not name.startswith("_") and not isinstance(value, type(halomail))
    }
    assert sorted(halomail.__all__) == halomail.__all__
    assert set(halomail.__all__) - {"__version__"} == public


def test_every_public_name_has_a_docstring() -> None:
    """Each exported class and function documents itself."""
    undocumented = [
        name
        for name in halomail.__all__
        if name != "__version__"
        and callable(getattr(halomail, name))
        and not (getattr(halomail, name).__doc__ or "").strip()
    ]
    assert undocumented == []
