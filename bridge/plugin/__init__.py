"""The pedalboard contract: ``StemSeparator`` (a separator called like a plugin), ``Chain`` (native
plugins and ours in one sequence), pedalboard's channel-layout rule, and rig files (YAML -> a
validated spec the separator is built from)."""
