"""The tutorials run as tests through nbmake when it is installed (the test extra has it):
`pytest` (or `pytest notebooks/01-quickstart.ipynb`) executes them. Without nbmake, plain
`pytest` still works and simply does not collect them."""


def pytest_configure(config):
    if config.pluginmanager.hasplugin("nbmake") and hasattr(config.option, "nbmake"):
        config.option.nbmake = True
