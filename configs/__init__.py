"""The protocol presets (one YAML file per built-in task family, plus quickstart), installed as metarl.configs.

`metarl train --env NAME` reads NAME.yaml from here; `metarl.runs.preset_path(NAME)` finds one by name.
"""
