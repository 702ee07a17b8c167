"""The scan gate: the vulnerability DB, Trivy's report, the policy and the ignore formats
(purls, doublestar globs), the reports for every CI, the ``scan`` command and the scan stage.
Running Trivy is pipeline/tools/trivy.py."""
