"""Sums test results from TRX (dotnet test) and JUnit XML (pytest, node) files.

Usage: count-results.py DIR [STATUS]  -> prints "N passed, N failed" (skipped tests are counted as
neither) and exits 1 if anything failed or nothing ran. A non-zero STATUS (the test command's own) with
no failed test in the files counts as one failure: a runner failed without reporting a test.
"""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

passed = failed = 0
for path in sorted(Path(sys.argv[1]).rglob("*")):
    if path.suffix not in (".trx", ".xml"):
        continue
    root = ET.parse(path).getroot()
    if root.tag.endswith("TestRun"):
        counters = next(e for e in root.iter() if e.tag.endswith("Counters"))
        passed += int(counters.get("passed", 0))
        failed += int(counters.get("failed", 0)) + int(counters.get("error", 0)) + int(counters.get("timeout", 0)) + int(counters.get("aborted", 0))
    else:
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            if any(child.tag == "testsuite" for child in suite):
                continue  # counted through its children
            tests = int(suite.get("tests", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped = int(suite.get("skipped", 0))
            passed += tests - bad - skipped
            failed += bad

if len(sys.argv) > 2 and sys.argv[2] != "0" and failed == 0:
    print("a test step failed without a failed test in its results (see its output above)", file=sys.stderr)
    failed = 1

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or passed == 0 else 0)
