"""Run configs: the schema of defaults and valid ranges, and the checks a config passes before a run."""
