"""The Django repository's users, customers, assets and files (the ``Directory`` role)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from django.db import IntegrityError

from halomail.contrib.django import models as m
from halomail.contrib.django._base import DjangoBase, aware, payload
from halomail.errors import RepositoryError
from halomail.tickets._common import (
    address_key,
    domain_key,
    domain_of,
    field_key,
    file_owner,
    fold,
    merge_fields,
)
from halomail.tickets.models import Asset, Customer, FileOwner, StoredAttachment, StoredFile, User

__all__ = ["DirectoryPart"]


def _customer(row: m.Customer) -> Customer:
    return Customer(
        id=row.pk,
        name=row.name,
        domains=tuple(row.domains),
        from_address=row.from_address,
        reply_address=row.reply_address,
    )


def _user(row: m.User) -> User:
    return User(row.pk, row.email, row.name, row.customer_id, row.phone, row.mobile)


def _asset(row: m.Asset) -> Asset:
    return Asset(id=row.pk, tag=row.tag, fields=dict(row.fields), customer_id=row.customer_id)


def _stored_file(row: m.StoredFile) -> StoredFile:
    return StoredFile(
        id=row.pk,
        owner=row.owner,
        owner_id=row.owner_id,
        filename=row.filename,
        storage_name=row.storage_name,
        content_type=row.content_type,
        size=row.size,
        content_id=row.content_id,
        inline=row.inline,
        payload=payload(row.payload),
        note=row.note,
        created_at=aware(row.created_at),
    )


def _field_rows(fields: Mapping[str, str]) -> set[tuple[str, str]]:
    """An asset's rows of :class:`~.models.AssetField`: each field's compared name and value."""
    return {(field_key(name), fold(value)) for name, value in fields.items()}


class DirectoryPart(DjangoBase):
    """Users, customers and assets, their seeding, and files kept without a ticket."""

    # -- seeding (what halomail's own repositories offer beyond the contract) ----

    def add_customer(
        self,
        name: str,
        domains: Sequence[str] = (),
        from_address: str | None = None,
        reply_address: str | None = None,
    ) -> Customer:
        """Add a customer owning ``domains`` (stored lower-cased); return it with its id.

        When two customers claim a domain, the first one added owns it.
        """
        keys = tuple(dict.fromkeys(key for key in map(domain_key, domains) if key))
        with self._writing():
            row = m.Customer.objects.using(self._using).create(
                name=name,
                domains=list(keys),
                from_address=from_address,
                reply_address=reply_address,
            )
            m.CustomerDomain.objects.using(self._using).bulk_create(
                [m.CustomerDomain(domain=key, customer=row) for key in keys]
            )
        return _customer(row)

    def add_user(
        self,
        email: str,
        name: str = "",
        customer_id: int | None = None,
        phone: str | None = None,
        mobile: str | None = None,
    ) -> User:
        """Add an end user (address stored lower-cased, unique); return it with its id.

        Raises:
            RepositoryError: When a user with this address exists, or the customer does not.
        """
        key = address_key(email)
        with self._writing():
            self._require_customer(customer_id)
            try:
                with self._savepoint():
                    row = m.User.objects.using(self._using).create(
                        email=key, name=name, customer_id=customer_id, phone=phone, mobile=mobile
                    )
            except IntegrityError:
                raise RepositoryError(f"a user with the address {key!r} already exists") from None
        return _user(row)

    def add_asset(
        self, tag: str, fields: Mapping[str, str] | None = None, customer_id: int | None = None
    ) -> Asset:
        """Add an asset; return it with its id.

        Raises:
            RepositoryError: When the customer does not exist.
        """
        with self._writing():
            self._require_customer(customer_id)
            return self._insert_asset(tag, dict(fields or {}), customer_id)

    def _insert_asset(self, tag: str, values: dict[str, str], customer_id: int | None) -> Asset:
        row = m.Asset.objects.using(self._using).create(
            tag=tag, tag_key=fold(tag), fields=values, customer_id=customer_id
        )
        self._add_field_rows(row.pk, _field_rows(values))
        return _asset(row)

    def _add_field_rows(self, asset_id: int, rows: set[tuple[str, str]]) -> None:
        m.AssetField.objects.using(self._using).bulk_create(
            [m.AssetField(name=name, value_key=value, asset_id=asset_id) for name, value in rows]
        )

    def save_asset(
        self, tag: str, fields: Mapping[str, str], *, customer_id: int | None = None
    ) -> tuple[Asset, bool]:
        """Create the asset with this tag, or update the one that has it.

        The existing asset is the first one added with this tag (compared
        case-insensitively); it keeps its id and its tag's spelling, and ``fields``
        are merged over its own. ``customer_id`` ``None`` keeps its owner.

        Returns:
            The asset as stored now, and True when it was created.

        Raises:
            RepositoryError: When ``customer_id`` names no customer.
        """
        values = dict(fields)
        with self._writing():
            self._require_customer(customer_id)
            assets = m.Asset.objects.using(self._using).select_for_update()
            row = assets.filter(tag_key=fold(tag)).order_by("id").first()
            if row is None:
                return self._insert_asset(tag, values, customer_id), True
            old = _asset(row)
            merged = merge_fields(old.fields, values)
            row.fields = merged
            if customer_id is not None:
                row.customer_id = customer_id
            row.save(using=self._using, update_fields=["fields", "customer"])
            before, after = _field_rows(old.fields), _field_rows(merged)
            field_rows = m.AssetField.objects.using(self._using).filter(asset_id=row.pk)
            for name, value in sorted(before - after):
                field_rows.filter(name=name, value_key=value).delete()
            self._add_field_rows(row.pk, after - before)
        return _asset(row), False

    def _require_customer(self, customer_id: int | None) -> None:
        if customer_id is None:
            return
        if not m.Customer.objects.using(self._using).filter(pk=customer_id).exists():
            raise RepositoryError(f"customer {customer_id} does not exist")

    def _require_owner(self, owner: str, owner_id: int) -> None:
        if owner == "customer":
            self._require_customer(owner_id)
        elif not m.Asset.objects.using(self._using).filter(pk=owner_id).exists():
            raise RepositoryError(f"asset {owner_id} does not exist")

    # -- lookups ------------------------------------------------------------------

    def find_user(self, email: str) -> User | None:
        """The user with this address (compared case-insensitively), or ``None``."""
        with self._reading():
            row = m.User.objects.using(self._using).filter(email=address_key(email)).first()
        return None if row is None else _user(row)

    def find_customer(self, email: str) -> Customer | None:
        """The customer of the user with this address, else the customer owning its domain."""
        with self._reading(snapshot=True):
            customer_id = (
                m.User.objects.using(self._using)
                .filter(email=address_key(email))
                .values_list("customer_id", flat=True)
                .first()
            )
            domain = domain_of(email)
            if customer_id is None and domain is not None:
                customer_id = (
                    m.CustomerDomain.objects.using(self._using)
                    .filter(domain=domain)
                    .order_by("customer_id")
                    .values_list("customer_id", flat=True)
                    .first()
                )
            if customer_id is None:
                return None
            row = m.Customer.objects.using(self._using).filter(pk=customer_id).first()
        return None if row is None else _customer(row)

    def find_asset(self, field: str, value: str) -> Asset | None:
        """The asset whose ``field`` (``"tag"`` or a field name, compared ignoring case,
        spaces and punctuation) equals ``value`` (case-insensitively), or ``None``; the
        first one added wins."""
        key = field_key(field)
        assets = m.Asset.objects.using(self._using)
        with self._reading():
            if key == "tag":
                row = assets.filter(tag_key=fold(value)).order_by("id").first()
            else:
                matching = m.AssetField.objects.using(self._using).filter(
                    name=key, value_key=fold(value)
                )
                row = assets.filter(pk__in=matching.values("asset_id")).order_by("id").first()
        return None if row is None else _asset(row)

    # -- files kept without a ticket -------------------------------------------------

    def store_files(
        self,
        *,
        owner: FileOwner,
        owner_id: int,
        attachments: Sequence[StoredAttachment],
        note: str = "",
    ) -> Sequence[StoredFile]:
        """Keep files against a customer or an asset, with no ticket, in one transaction.

        Returns:
            The files as stored, one per attachment, in order.

        Raises:
            RepositoryError: When the customer or asset does not exist.
            ValueError: When ``owner`` is neither ``"customer"`` nor ``"asset"``.
        """
        kind = file_owner(owner)
        now = self._now()
        stored: list[StoredFile] = []
        with self._writing():
            self._require_owner(kind, owner_id)
            for item in attachments:
                row = m.StoredFile.objects.using(self._using).create(
                    owner=kind,
                    owner_id=owner_id,
                    note=note,
                    created_at=now,
                    **attrs.asdict(item, recurse=False),
                )
                stored.append(
                    StoredFile(
                        id=row.pk,
                        owner=kind,
                        owner_id=owner_id,
                        note=note,
                        created_at=now,
                        **attrs.asdict(item, recurse=False),
                    )
                )
        return tuple(stored)

    def list_files(self, *, owner: FileOwner, owner_id: int) -> Sequence[StoredFile]:
        """The files kept against a customer or an asset, oldest first (empty for none)."""
        kind = file_owner(owner)
        with self._reading():
            rows = list(
                m.StoredFile.objects.using(self._using)
                .filter(owner=kind, owner_id=owner_id)
                .order_by("id")
            )
        return [_stored_file(row) for row in rows]
