import inspect

import ocipush


def test_all_lists_exactly_the_public_names():
    public = {name for name, value in vars(ocipush).items() if not name.startswith("_") and not inspect.ismodule(value)}
    assert ocipush.__all__ == sorted(ocipush.__all__)
    assert set(ocipush.__all__) == public
