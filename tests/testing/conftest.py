# project/ is a user's project that test_plugin.py copies and runs on its own: not part of this suite.
collect_ignore = ["project"]
