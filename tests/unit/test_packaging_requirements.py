"""The Bento build's requirement parsing without an option parser per plain line gives
what pip-requirements-parser's own parsing gives, line for line."""

from __future__ import annotations

from pathlib import Path

import pip_requirements_parser
import pytest
from pip_requirements_parser import RequirementsFile

from bentos.packaging import quick_requirement_lines

REPO = Path(__file__).resolve().parents[2]
MIXED = """# a comment line
--extra-index-url https://download.pytorch.org/whl/cpu

numpy==2.1.3
pandas==2.2.3 ; python_version >= "3.10"  # trailing comment
torch==2.5.1+cpu --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000
-r nested.txt
-c constraints.txt
requests[socks]>=2.31,<3
"""


def parsed(path: Path) -> tuple[str, dict[str, object]]:
    found = RequirementsFile.from_file(str(path), include_nested=True)
    return found.dumps(preserve_one_empty_line=True), found.to_dict()


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-torch.txt"])
def test_the_bento_requirement_files_parse_the_same(name: str) -> None:
    path = REPO / "bentos" / name
    own = parsed(path)
    with quick_requirement_lines():
        quick = parsed(path)
    assert quick == own
    assert "==" in own[0]


def test_lines_with_options_nested_files_and_markers_parse_the_same(tmp_path: Path) -> None:
    (tmp_path / "nested.txt").write_text("scipy==1.14.1\n")
    (tmp_path / "constraints.txt").write_text("urllib3<3\n")
    path = tmp_path / "requirements.txt"
    path.write_text(MIXED)
    original = pip_requirements_parser.get_line_parser
    own = parsed(path)
    with quick_requirement_lines():
        quick = parsed(path)
    assert pip_requirements_parser.get_line_parser is original  # put back
    assert quick == own
    assert "scipy==1.14.1" in own[0] and "--hash=sha256:" in own[0]


def test_a_plain_line_gets_the_default_options_in_lists_of_its_own() -> None:
    slow = pip_requirements_parser.get_line_parser()
    with quick_requirement_lines():
        quick = pip_requirements_parser.get_line_parser()
    for line in ("numpy==2.1.3", "", "pandas==2.2.3 ; python_version >= '3.10'"):
        args, opts, rest = quick(line)
        assert (args, opts.__dict__, rest) == (lambda a, o, r: (a, o.__dict__, r))(*slow(line))
    first, second = quick("numpy==2.1.3")[1], quick("scipy==1.14.1")[1]
    assert first.hashes == [] and first.hashes is not second.hashes
