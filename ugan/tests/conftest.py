import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

from reprokit.testing import unshadow_package  # noqa: E402

unshadow_package("ugan")  # the member folder ugan/ shares the package's name (see the helper's docstring)
