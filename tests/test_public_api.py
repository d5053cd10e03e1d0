import subprocess
import sys

import ckpttool


def test_every_public_name_resolves():
    for name in ckpttool.__all__:
        assert getattr(ckpttool, name) is not None, name


def test_importing_the_package_stays_light():
    code = "import sys, ckpttool; assert 'torch' not in sys.modules and 'timm' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
