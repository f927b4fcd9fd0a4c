"""Create a verification host's signing key (if the file is missing) and register its public key."""

from pathlib import Path

from django.core.management.base import BaseCommand

from verification.runner.certificate import generate_signing_key, load_private_key, private_key_pem, public_key_pem
from verification.services import signing_key_register


class Command(BaseCommand):
    help = "Ensure an Ed25519 signing key exists at PATH and register its public key as active."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)

    def handle(self, *args, path: Path, **options):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(private_key_pem(generate_signing_key()))
            path.chmod(0o600)
        key = signing_key_register(public_key_pem=public_key_pem(load_private_key(path)).decode())
        self.stdout.write(f"Signing key {key.key_id} registered ({path}).")
