"""The committed notebooks follow the project's conventions, so nbval runs them under the smoke profile."""
import json

import pytest

from nnprak import config

NOTEBOOKS = sorted((config.ROOT / "notebooks").glob("0*.ipynb"))


def test_six_numbered_notebooks():
    assert [nb.name[:2] for nb in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_and_no_injected_profile(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first["metadata"].get("tags", []), "first code cell must be the papermill parameters cell"
    assert "PROFILE = None" in "".join(first["source"])
    # an injected `PROFILE = "default"` would override NNPRAK_PROFILE=smoke when nbval runs the notebook
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in cells)
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_carry_no_paths_of_the_machine_that_ran_them(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    meta = nb["metadata"].get("papermill", {})
    for key in ("input_path", "output_path"):
        assert meta.get(key, f"notebooks/{path.name}") == f"notebooks/{path.name}", f"{key}: {meta.get(key)}"
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert str(config.ROOT) not in outputs and "PosixPath(" not in outputs
    assert "widgets" not in nb["metadata"]      # progress-bar state of an older interactive run, not of these outputs


FILE_LITERAL = r"""["'][^"'\n]*\.(?:pt|pth|json|csv|npz|joblib|png|pdf|jpg|tex)["']"""


def test_the_file_literal_check_finds_file_names():
    import re

    assert re.search(FILE_LITERAL, 'model.save(paths.models / "predict.joblib")')
    assert re.search(FILE_LITERAL, "paths.processed / f'{arch}_{s}.npz'")
    assert not re.search(FILE_LITERAL, 'print(f"{len(X)} embeddings")  # models/predict.joblib in a comment')


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_name_no_files_and_define_no_helpers(path):
    """File names come from ``cfg.paths`` (nnprak/config.py); functions belong in nnprak/, not in a notebook."""
    import ast
    import re

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for cell in (c for c in cells if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())   # comments may name files
        assert not re.search(FILE_LITERAL, code), f"a file name in a cell of {path.name}:\n{source}"
        tree = ast.parse(source)
        helpers = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                   or isinstance(n, ast.Assign) and isinstance(n.value, ast.Lambda)]   # a key=lambda is no helper
        assert not helpers, f"a function defined in a cell of {path.name} (move it to nnprak/):\n{source}"
