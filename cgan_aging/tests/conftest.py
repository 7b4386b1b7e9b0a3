import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

from reprokit.testing import unshadow_package  # noqa: E402

unshadow_package("cgan_aging")  # the member folder cgan_aging/ shares the package's name
