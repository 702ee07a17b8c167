"""Signing: keys, what cosign left in a registry (attachments), verification, and the sign
and verify stages. Running cosign is pipeline/tools/cosign.py."""
