"""The README says only what the repository and its tests show."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
        return f.read()


def test_readme_links_stay_inside_the_repository():
    readme = _read("README.md")
    assert "../shared" not in readme and "SEMANTICS.md" not in readme
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if target.startswith(("http://", "https://")):
            continue
        assert os.path.exists(os.path.join(REPO, target)), target
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        path = os.path.join(REPO, image)
        assert image.startswith("docs/") and os.path.getsize(path) < 150 * 1024, image
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_parity_wording_matches_the_parity_test():
    test = _read("tests", "modeling", "test_golden_parity.py")
    section = _read("README.md").split("## Parity", 1)[1].split("\n## ", 1)[0]
    # The thresholds the test asserts ...
    for pattern in (r"\) <= 0\.003", r"_box_iou\(.*\) >= 0\.95", r"score\"\]\) <= 0\.01", r"miou >= 0\.9",
                    r"score\"\] < 0\.3", r"checked >= 50", r"len\(golden_run\[\"bbox\"\]\) == len\(ref_b\)"):
        assert re.search(pattern, test), pattern
    # ... are the ones the README states, and nothing stronger.
    for claim in ("within 0.003", "score ≥ 0.3", "at least 50", "box IoU ≥ 0.95", "score within 0.01",
                  "mask IoU ≥ 0.9", "total number of detections is the same"):
        assert claim in section, claim
    assert "equal" not in section.lower()


def test_docs_semantics_exists_and_names_tests_that_exist():
    doc = _read("docs", "semantics.md")
    for path in re.findall(r"`(tests/[^`]+\.py)`", doc):
        assert os.path.isfile(os.path.join(REPO, path)), path
