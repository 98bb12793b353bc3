"""The public API's jobs: creating, reading, listing and cancelling them, the workflows they run, and the sandbox's twins."""
