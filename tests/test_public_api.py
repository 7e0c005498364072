"""The public API: what `import halomail` offers is exactly what __all__ lists."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import halomail
from halomail._moved import MOVED


def test_all_lists_every_public_name_and_is_sorted() -> None:
    """__all__ is sorted and names every public attribute of the package, no more, no less."""
    public = {
        name
        for name, value in vars(halomail).items()
        if not name.startswith("_") and not isinstance(value, type(halomail))
    } | set(halomail._LAZY)
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


def test_import_halomail_needs_no_extra_and_lazy_names_import_on_use() -> None:
    """`import halomail` leaves psycopg unimported; the PostgreSQL repository imports on use."""
    code = (
        "import sys, halomail\n"
        "print('psycopg' in sys.modules)\n"
        "print(halomail.PostgreSQLTicketRepository.__module__, 'psycopg' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["False", "halomail.tickets.postgres True"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name halomail does not export raises AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = halomail.NoSuchThing  # type: ignore[attr-defined]


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_a_moved_module_still_imports_by_its_old_name_with_a_warning(old: str, new: str) -> None:
    """Code written for 0.1 imports the module from its new place and is told it moved."""
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
