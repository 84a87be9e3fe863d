import inspect

import ocipush


def test_all_lists_exactly_the_public_names():
    """Every public name, whether already imported or still lazy (ocipush/__init__.py)."""
    public = {name for name in dir(ocipush)
              if not name.startswith("_") and not inspect.ismodule(getattr(ocipush, name))}
    assert ocipush.__all__ == sorted(ocipush.__all__)
    assert set(ocipush.__all__) == public


def test_push_is_the_function_even_after_its_module_is_imported():
    import ocipush.push  # sets the package's attribute, as the CLI's imports do

    assert inspect.isfunction(ocipush.push) and ocipush.push.__module__ == "ocipush.push"
