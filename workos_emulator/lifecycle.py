"""The emulator's state over its lifetime: loaded (or seeded) at start, reloaded from the seed on reset."""

from __future__ import annotations

from .seed import apply_seed, load_seed_file
from .seed_passwords import apply_seed_passwords, sync_seed_passwords
from .state import Emulator
from .store import Store


def load_state(emu: Emulator, seed_path: str | None) -> None:
    """The saved state of ``emu``'s data folder, else the seed (with its generated passwords), saved."""
    seed = load_seed_file(seed_path)

    def fill(store: Store) -> None:
        apply_seed(store, seed)
        apply_seed_passwords(store, seed, emu.config.data_dir)

    try:
        with emu.store.lock:
            # saved state wins over the seed: a password changed through the API survives a restart
            emu.persistence.load_or_seed(emu.store, fill)
            sync_seed_passwords(emu.store, seed, emu.config.data_dir)
    except Exception:
        emu.shutdown()  # no thread nor open state file left behind by an emulator that never started
        raise


def reset_emulator(emu: Emulator) -> None:
    """Reload the seed into a fresh store and save it (the signing key is kept); clear webhooks and faults."""
    with emu.store.lock:
        fresh = Store()
        seed = load_seed_file(emu.config.seed_path)
        apply_seed(fresh, seed)
        apply_seed_passwords(fresh, seed, emu.config.data_dir)
        for name in Store.__dataclass_fields__:
            if name != "lock":
                setattr(emu.store, name, getattr(fresh, name))
        emu.persistence.seeded(emu.store)
    emu.dispatcher.clear()
    emu.dispatcher.update(**emu.initial_webhook_settings)
    emu.faults.clear()
