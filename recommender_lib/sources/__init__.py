"""Sources stage: the exact source formats, versioned downloads, integrity checks, cheap
new-release probes and the sample-mirror generator."""
