"""The release stages that belong to no capability: copy (upload to every release registry),
tag (the release tags, last) and report. The others live in their capability's package; the
order of all of them is the RELEASE tuple in pipeline/plan.py."""
