pytest_plugins = ["hil.fixtures"]
