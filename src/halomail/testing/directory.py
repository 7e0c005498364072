"""The :class:`~halomail.Directory` role: users, customers, assets and their files."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from halomail.errors import RepositoryError
from halomail.testing._base import CompleteRepository, ContractBase
from halomail.tickets.models import (
    Asset,
    StoredAttachment,
)

__all__ = ["DirectoryContract"]


class DirectoryContract(ContractBase):
    """The :class:`~halomail.Directory` role: users, customers, assets and their files.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_find_user_ignores_case_and_returns_every_field(
        self, repository: CompleteRepository
    ) -> None:
        """A known user is found by address in any case, with name, phone and mobile."""
        self._people(repository)
        user = repository.find_user("Alice@CUSTOMER.example")
        assert user is not None
        assert (user.email, user.name, user.phone, user.mobile) == (
            "alice@customer.example",
            "Alice Martin",
            "+44 20 1234",
            "+44 7700 1",
        )
        customer = repository.find_customer("alice@customer.example")
        assert customer is not None
        assert user.customer_id == customer.id

    def test_find_user_of_an_unknown_address_is_none(self, repository: CompleteRepository) -> None:
        """An address no user has finds no user, even in a known domain."""
        self._people(repository)
        assert repository.find_user("mallory@customer.example") is None
        assert repository.find_user("") is None

    def test_find_customer_prefers_the_user_customer_to_the_domain(
        self, repository: CompleteRepository
    ) -> None:
        """A known user's own customer wins over the customer owning the address's domain."""
        self._people(repository)
        customer = repository.find_customer("BOB@partner.example")
        assert customer is not None
        assert customer.name == "Customer Ltd"
        assert customer.domains == ("customer.example",)
        assert customer.from_address == "support@customer.example"
        assert customer.reply_address == "replies@customer.example"

    def test_find_customer_by_domain(self, repository: CompleteRepository) -> None:
        """An unknown address, or a user with no customer, finds the customer of its domain."""
        self._people(repository)
        unknown = repository.find_customer("Someone@Partner.Test")
        assert unknown is not None
        assert (unknown.name, unknown.domains) == (
            "Partner plc",
            ("partner.example", "partner.test"),
        )
        assert unknown.from_address is None
        assert unknown.reply_address is None
        carol = repository.find_customer("carol@partner.test")
        assert carol is not None
        assert carol.name == "Partner plc"

    def test_find_customer_of_an_unknown_address_is_none(
        self, repository: CompleteRepository
    ) -> None:
        """An address of no known user and no known domain finds no customer."""
        self._people(repository)
        assert repository.find_customer("someone@elsewhere.example") is None
        assert repository.find_customer("someone@sub.customer.example") is None
        assert repository.find_customer("not-an-address") is None

    def test_find_asset_by_tag_ignores_case(self, repository: CompleteRepository) -> None:
        """An asset is found by its tag in any case, with its fields."""
        self.seed(
            repository,
            assets=[
                Asset(1, "LAPTOP-0042", {"Serial Number": "SN-ABC-123", "Host name": "lt42"}),
                Asset(2, "PRN-7", {"Serial Number": "SN-XYZ-9"}),
            ],
        )
        asset = repository.find_asset("tag", "laptop-0042")
        assert asset is not None
        assert asset.tag == "LAPTOP-0042"
        assert dict(asset.fields) == {"Serial Number": "SN-ABC-123", "Host name": "lt42"}
        other = repository.find_asset("tag", "prn-7")
        assert other is not None
        assert other.tag == "PRN-7"

    def test_find_asset_by_field_ignores_case_of_the_value(
        self, repository: CompleteRepository
    ) -> None:
        """An asset is found by a field's value in any case."""
        self.seed(
            repository,
            assets=[
                Asset(1, "LAPTOP-0042", {"Serial Number": "SN-ABC-123", "Host name": "lt42"}),
                Asset(2, "PRN-7", {"Serial Number": "SN-XYZ-9"}),
            ],
        )
        asset = repository.find_asset("Serial Number", "sn-xyz-9")
        assert asset is not None
        assert asset.tag == "PRN-7"
        by_host = repository.find_asset("Host name", "LT42")
        assert by_host is not None
        assert by_host.tag == "LAPTOP-0042"

    def test_find_asset_by_field_ignores_case_spaces_and_punctuation_of_the_name(
        self, repository: CompleteRepository
    ) -> None:
        """A field name is one field in any case or separators: "Serial Number" = serial_number.

        .. versionadded:: 0.1.0
        """
        self.seed(
            repository,
            assets=[
                Asset(1, "LAPTOP-0042", {"serial_number": "SN-ABC-123"}),  # as inventory writes
                Asset(2, "PRN-7", {"Serial Number": "SN-XYZ-9"}),
            ],
        )
        for name in ("Serial Number", "serial number", "SERIAL_NUMBER", "Serial-Number"):
            found = [repository.find_asset(name, v) for v in ("sn-abc-123", "SN-XYZ-9")]
            assert [a.tag if a else None for a in found] == ["LAPTOP-0042", "PRN-7"], name
        assert repository.find_asset("Serial", "SN-ABC-123") is None
        assert repository.find_asset("TAG", "prn-7") == repository.find_asset("tag", "PRN-7")

    def test_save_asset_replaces_a_field_given_in_another_spelling(
        self, repository: CompleteRepository
    ) -> None:
        """A field sent again spelt differently replaces the old value, which no longer finds it.

        .. versionadded:: 0.1.0
        """
        repository.save_asset("WS-1", {"Serial Number": "OLD-1", "Host name": "ws1"})
        asset, created = repository.save_asset("ws-1", {"serial_number": "NEW-2"})
        assert created is False
        assert dict(asset.fields) == {"Host name": "ws1", "serial_number": "NEW-2"}
        assert repository.find_asset("Serial Number", "NEW-2") == asset
        assert repository.find_asset("Serial Number", "OLD-1") is None
        assert repository.find_asset("host_name", "WS1") == asset

    def test_find_asset_of_an_unknown_value_or_field_is_none(
        self, repository: CompleteRepository
    ) -> None:
        """A value no asset has, or a value under the wrong field, finds no asset."""
        self.seed(repository, assets=[Asset(1, "LAPTOP-0042", {"Serial Number": "SN-ABC-123"})])
        assert repository.find_asset("tag", "LAPTOP-9999") is None
        assert repository.find_asset("Serial Number", "SN-ABC") is None
        assert repository.find_asset("Host name", "SN-ABC-123") is None
        assert repository.find_asset("tag", "SN-ABC-123") is None

    def test_save_asset_creates_an_asset_that_find_asset_finds(
        self, repository: CompleteRepository
    ) -> None:
        """A new tag creates an asset (created=True) found by its tag and by its fields."""
        asset, created = repository.save_asset(
            "WS-0107", {"Serial Number": "CZC1234XYZ", "Host name": "ws-0107"}
        )
        assert created is True
        assert (asset.tag, asset.customer_id) == ("WS-0107", None)
        assert dict(asset.fields) == {"Serial Number": "CZC1234XYZ", "Host name": "ws-0107"}
        assert repository.find_asset("tag", "ws-0107") == asset
        assert repository.find_asset("Serial Number", "czc1234xyz") == asset
        assert repository.find_asset("Host name", "WS-0107") == asset

    def test_save_asset_updates_by_tag_in_any_case_merging_fields(
        self, repository: CompleteRepository
    ) -> None:
        """A known tag in another case updates that asset: fields merged, id and tag kept."""
        first, _ = repository.save_asset(
            "LAPTOP-0042", {"Serial Number": "SN-ABC-123", "RAM": "8 GB", "OS": "Windows 10"}
        )
        updated, created = repository.save_asset(
            "laptop-0042", {"RAM": "16 GB", "OS": "Windows 11", "Disk": "512 GB"}
        )
        assert created is False
        assert (updated.id, updated.tag) == (first.id, "LAPTOP-0042")
        assert dict(updated.fields) == {
            "Serial Number": "SN-ABC-123",
            "RAM": "16 GB",
            "OS": "Windows 11",
            "Disk": "512 GB",
        }
        assert repository.find_asset("tag", "LAPTOP-0042") == updated
        assert repository.find_asset("RAM", "16 gb") == updated
        assert repository.find_asset("Disk", "512 GB") == updated
        assert repository.find_asset("Serial Number", "SN-ABC-123") == updated
        assert repository.find_asset("RAM", "8 GB") is None
        assert repository.find_asset("OS", "Windows 10") is None

    def test_save_asset_with_the_same_values_changes_nothing(
        self, repository: CompleteRepository
    ) -> None:
        """Saving no fields, or the same values in another case, keeps the asset findable."""
        first, _ = repository.save_asset("PRN-7", {"Serial Number": "SN-XYZ-9"})
        same, created = repository.save_asset("PRN-7", {})
        assert (same, created) == (first, False)
        recased, _ = repository.save_asset("prn-7", {"Serial Number": "sn-xyz-9"})
        assert dict(recased.fields) == {"Serial Number": "sn-xyz-9"}
        assert repository.find_asset("Serial Number", "SN-XYZ-9") == recased

    def test_save_asset_keeps_or_changes_the_owner(self, repository: CompleteRepository) -> None:
        """Without a customer an update keeps the owner; with one it moves the asset to it."""
        self._people(repository)
        customer = repository.find_customer("someone@customer.example")
        partner = repository.find_customer("someone@partner.example")
        assert customer is not None
        assert partner is not None
        self.seed(repository, assets=[Asset(1, "SRV-01", {"Role": "File server"})])
        created, _ = repository.save_asset("SRV-02", {}, customer_id=customer.id)
        assert created.customer_id == customer.id
        kept, _ = repository.save_asset("srv-02", {"Role": "Backup"})
        assert kept.customer_id == customer.id
        moved, _ = repository.save_asset("SRV-02", {}, customer_id=partner.id)
        assert moved.customer_id == partner.id
        assert repository.find_asset("tag", "srv-02") == moved
        seeded, was_created = repository.save_asset("srv-01", {"Role": "Print server"})
        assert was_created is False
        assert (seeded.tag, dict(seeded.fields)) == ("SRV-01", {"Role": "Print server"})

    def test_save_asset_with_an_unknown_customer_raises_and_changes_nothing(
        self, repository: CompleteRepository
    ) -> None:
        """A customer id of no customer raises RepositoryError; nothing is created or changed."""
        existing, _ = repository.save_asset("SRV-01", {"Role": "File server"})
        with pytest.raises(RepositoryError):
            repository.save_asset("SRV-01", {"Role": "Other"}, customer_id=existing.id + 1000)
        with pytest.raises(RepositoryError):
            repository.save_asset("SRV-99", {"Role": "New"}, customer_id=existing.id + 1000)
        assert repository.find_asset("tag", "SRV-01") == existing
        assert repository.find_asset("tag", "SRV-99") is None
        assert repository.find_asset("Role", "Other") is None

    def test_a_value_an_asset_drops_finds_the_next_asset_with_it(
        self, repository: CompleteRepository
    ) -> None:
        """When the first asset with a value changes it, find_asset finds the next one with it."""
        first, _ = repository.save_asset("DOCK-1", {"Location": "Room 101"})
        second, _ = repository.save_asset("DOCK-2", {"Location": "Room 101"})
        found = repository.find_asset("Location", "room 101")
        assert found is not None
        assert found.id == first.id
        repository.save_asset("DOCK-1", {"Location": "Room 202"})
        after = repository.find_asset("Location", "Room 101")
        assert after is not None
        assert after.id == second.id
        moved = repository.find_asset("Location", "Room 202")
        assert moved is not None
        assert moved.id == first.id

    def test_store_files_round_trips_byte_exact(self, repository: CompleteRepository) -> None:
        """Files kept against a customer read back byte for byte, in order, with owner and note."""
        customer_id, _ = self._owners(repository)
        noise = random.Random(20240502).randbytes((3 << 20) + 4099)
        files = (
            StoredAttachment("empty.txt", "f0.bin", "text/plain", 0, payload=b""),
            StoredAttachment(
                "bytes.bin",
                "f1.bin",
                "application/octet-stream",
                1024,
                payload=bytes(range(256)) * 4,
            ),
            StoredAttachment(
                "report — März.pdf", "f2.pdf", "application/pdf", len(noise), payload=noise
            ),
            StoredAttachment(
                "logo.png", "f3.png", "image/png", 8, "<logo@x.example>", True, b"\x89PNG\r\n\x1a\n"
            ),
        )
        stored = repository.store_files(
            owner="customer", owner_id=customer_id, attachments=files, note="Monthly export"
        )
        assert [f.attachment for f in stored] == list(files)
        assert len({f.id for f in stored}) == 4
        assert all(
            (f.owner, f.owner_id, f.note) == ("customer", customer_id, "Monthly export")
            for f in stored
        )
        assert all(f.created_at.utcoffset() == dt.timedelta(0) for f in stored)
        listed = list(repository.list_files(owner="customer", owner_id=customer_id))
        assert listed == list(stored)
        assert [f.payload for f in listed] == [
            b"",
            bytes(range(256)) * 4,
            noise,
            b"\x89PNG\r\n\x1a\n",
        ]
        assert [(f.filename, f.content_type, f.size) for f in listed] == [
            ("empty.txt", "text/plain", 0),
            ("bytes.bin", "application/octet-stream", 1024),
            ("report — März.pdf", "application/pdf", len(noise)),
            ("logo.png", "image/png", 8),
        ]
        assert (listed[3].inline, listed[3].content_id, listed[3].storage_name) == (
            True,
            "<logo@x.example>",
            "f3.png",
        )

    def test_list_files_is_per_owner_and_oldest_first(self, repository: CompleteRepository) -> None:
        """Each owner lists only its own files, across calls oldest first; others list none."""
        customer_id, asset_id = self._owners(repository)

        def one(name: str) -> tuple[StoredAttachment, ...]:
            return (StoredAttachment(name, name + ".bin", "text/csv", 3, payload=b"a,b"),)

        repository.store_files(owner="asset", owner_id=asset_id, attachments=one("first"))
        repository.store_files(owner="customer", owner_id=customer_id, attachments=one("theirs"))
        repository.store_files(
            owner="asset", owner_id=asset_id, attachments=one("second"), note="later"
        )
        on_asset = list(repository.list_files(owner="asset", owner_id=asset_id))
        assert [(f.filename, f.note) for f in on_asset] == [
            ("first", ""),
            ("second", "later"),
        ]
        assert all((f.owner, f.owner_id) == ("asset", asset_id) for f in on_asset)
        on_customer = list(repository.list_files(owner="customer", owner_id=customer_id))
        assert [f.filename for f in on_customer] == ["theirs"]
        assert list(repository.list_files(owner="customer", owner_id=customer_id + 1000)) == []
        assert list(repository.list_files(owner="asset", owner_id=asset_id + 1000)) == []

    def test_store_files_without_attachments_stores_nothing(
        self, repository: CompleteRepository
    ) -> None:
        """An empty list of attachments stores no file and returns none."""
        customer_id, _ = self._owners(repository)
        assert (
            list(repository.store_files(owner="customer", owner_id=customer_id, attachments=()))
            == []
        )
        assert list(repository.list_files(owner="customer", owner_id=customer_id)) == []

    def test_store_files_for_a_missing_owner_raises_and_keeps_nothing(
        self, repository: CompleteRepository
    ) -> None:
        """Files for a customer or asset that does not exist raise RepositoryError, none kept."""
        customer_id, asset_id = self._owners(repository)
        files = (StoredAttachment("a.txt", "a.bin", "text/plain", 1, payload=b"a"),)
        missing_customer = customer_id + 1000
        missing_asset = asset_id + 1000
        with pytest.raises(RepositoryError):
            repository.store_files(owner="customer", owner_id=missing_customer, attachments=files)
        with pytest.raises(RepositoryError):
            repository.store_files(owner="asset", owner_id=missing_asset, attachments=files)
        assert list(repository.list_files(owner="customer", owner_id=missing_customer)) == []
        assert list(repository.list_files(owner="asset", owner_id=missing_asset)) == []

    def test_store_files_for_an_unknown_kind_of_owner_raises_value_error(
        self, repository: CompleteRepository
    ) -> None:
        """An owner that is neither "customer" nor "asset" raises ValueError."""
        customer_id, _ = self._owners(repository)
        files = (StoredAttachment("a.txt", "a.bin", "text/plain", 1, payload=b"a"),)
        owner: Any = "ticket"
        with pytest.raises(ValueError, match="ticket"):
            repository.store_files(owner=owner, owner_id=customer_id, attachments=files)
