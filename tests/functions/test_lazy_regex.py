"""common.lazy_regex: marshmallow's import-time e-mail patterns are compiled on first use,
only the named module's own compiles are deferred, and ``re.compile`` is put back."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.lazy_regex import DeferredPattern, import_deferring_regexes


def test_marshmallow_is_imported_with_its_email_patterns_deferred() -> None:
    # A fresh interpreter: in this one marshmallow is long imported.
    script = textwrap.dedent(
        """
        import re
        import common.params
        from common.lazy_regex import DeferredPattern, _original_compile
        from marshmallow import ValidationError, validate
        pattern = validate.Email.USER_REGEX
        assert isinstance(pattern, DeferredPattern), type(pattern)
        assert not pattern.compiled and not validate.Email.DOMAIN_REGEX.compiled
        assert re.compile is _original_compile
        email = validate.Email()
        assert email("ana.lopez@example.com") == "ana.lopez@example.com"
        for bad in ("not an email", "a@b", "x@@example.com"):
            try:
                email(bad)
            except ValidationError:
                pass
            else:
                raise AssertionError(bad)
        assert pattern.compiled and pattern.pattern == pattern._real().pattern
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_only_the_named_modules_own_compiles_are_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lazy_regex_helper_mod.py").write_text(
        "import re\ndef make():\n    return re.compile('helper')\n"
    )
    (tmp_path / "lazy_regex_target_mod.py").write_text(
        "import re\nimport lazy_regex_helper_mod\n"
        "OWN = re.compile('[a-z]+', re.IGNORECASE)\n"
        "FROM_HELPER = lazy_regex_helper_mod.make()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = import_deferring_regexes("lazy_regex_target_mod")
    try:
        assert isinstance(module.OWN, DeferredPattern)
        assert isinstance(module.FROM_HELPER, re.Pattern)
        assert module.OWN.fullmatch("AbC") is not None
        assert module.OWN.flags & re.IGNORECASE
        assert import_deferring_regexes("lazy_regex_target_mod") is module  # imported once
    finally:
        sys.modules.pop("lazy_regex_target_mod", None)
        sys.modules.pop("lazy_regex_helper_mod", None)
    assert re.compile("x").pattern == "x"
