"""The public API's jobs: create, read, list and cancel them, the workflows they run, the sandbox's twins."""
