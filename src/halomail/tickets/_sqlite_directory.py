"""The SQL repositories' users, customers, assets and files (the ``Directory`` role).

The statements run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

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
from halomail.tickets._sql import (
    Connection,
    _json_list,
    _json_map,
    _mapping,
    _parse_time,
    _time,
    _tuple,
)
from halomail.tickets._sql_batch import BatchPart
from halomail.tickets.models import (
    Asset,
    Customer,
    FileOwner,
    StoredAttachment,
    StoredFile,
    User,
)

__all__ = ["DirectoryPart"]

_SQL_CUSTOMER_EXISTS = "SELECT 1 FROM customers WHERE id = ?"
_SQL_INSERT_CUSTOMER = (
    "INSERT INTO customers (name, domains, from_address, reply_address) VALUES (?, ?, ?, ?) "
    "RETURNING id"
)
_SQL_INSERT_CUSTOMER_DOMAIN = "INSERT INTO customer_domains (domain, customer_id) VALUES (?, ?)"
# A taken address returns no row (rather than failing, which would abort a PostgreSQL
# transaction).
_SQL_INSERT_USER = (
    "INSERT INTO users (email, name, customer_id, phone, mobile) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (email) DO NOTHING RETURNING id"
)
# The user with this address and its customer (the user's, else the first customer
# owning the address's domain; each lookup through its index) in one
# statement: a new email asks for both, once for its ticket and once for its
# acknowledgement, and the transaction keeps the answer (see DirectoryPart._person).
_SQL_FIND_PERSON = (
    "SELECT u.id, u.email, u.name, u.customer_id, u.phone, u.mobile, "
    "c.id, c.name, c.domains, c.from_address, c.reply_address "
    "FROM (SELECT CAST(? AS TEXT) AS email, CAST(? AS TEXT) AS domain) AS q "
    "LEFT JOIN users AS u ON u.email = q.email "
    "LEFT JOIN customers AS c ON c.id = COALESCE(u.customer_id, "
    "(SELECT customer_id FROM customer_domains WHERE domain = q.domain "
    "ORDER BY customer_id LIMIT 1))"
)
# _SQL_FIND_PERSON for several addresses at once (``{questions}`` is a UNION ALL of
# placeholder rows, the only thing formatted in).
_SQL_FIND_PEOPLE = (
    "SELECT q.email, u.id, u.email, u.name, u.customer_id, u.phone, u.mobile, "
    "c.id, c.name, c.domains, c.from_address, c.reply_address "
    "FROM ({questions}) AS q "
    "LEFT JOIN users AS u ON u.email = q.email "
    "LEFT JOIN customers AS c ON c.id = COALESCE(u.customer_id, "
    "(SELECT customer_id FROM customer_domains WHERE domain = q.domain "
    "ORDER BY customer_id LIMIT 1))"
)
_SQL_INSERT_ASSET = (
    "INSERT INTO assets (tag, tag_key, fields, customer_id) VALUES (?, ?, ?, ?) RETURNING id"
)
_SQL_INSERT_ASSET_FIELD = (
    "INSERT INTO asset_fields (name, value_key, asset_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)
_SQL_ASSET_BY_TAG = (
    "SELECT id, tag, fields, customer_id FROM assets WHERE tag_key = ? ORDER BY id LIMIT 1"
)
_SQL_ASSET_EXISTS = "SELECT 1 FROM assets WHERE id = ?"
_SQL_UPDATE_ASSET = "UPDATE assets SET fields = ?, customer_id = ? WHERE id = ?"
_SQL_DELETE_ASSET_FIELD = (
    "DELETE FROM asset_fields WHERE name = ? AND value_key = ? AND asset_id = ?"
)
_SQL_ASSET_BY_FIELD = (
    "SELECT a.id, a.tag, a.fields, a.customer_id FROM asset_fields f "
    "JOIN assets a ON a.id = f.asset_id WHERE f.name = ? AND f.value_key = ? "
    "ORDER BY f.asset_id LIMIT 1"
)

_FILE_COLUMNS = (
    "id, owner, owner_id, filename, storage_name, content_type, size, content_id, inline, "
    "note, created_at, payload"
)
_SQL_INSERT_FILE = (
    "INSERT INTO stored_files (owner, owner_id, filename, storage_name, content_type, size, "
    "content_id, inline, note, created_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "RETURNING id"
)
_SQL_LIST_FILES = (
    f"SELECT {_FILE_COLUMNS} FROM stored_files "  # noqa: S608
    "WHERE owner = ? AND owner_id = ? ORDER BY id"
)


def _field_rows(asset_id: int, fields: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """An asset's rows of ``asset_fields``: each field's compared name and value."""
    return [(field_key(name), fold(value), asset_id) for name, value in fields.items()]


def _customer(row: Sequence[Any]) -> Customer:
    return Customer(
        id=row[0], name=row[1], domains=_tuple(row[2]), from_address=row[3], reply_address=row[4]
    )


def _asset(row: Sequence[Any]) -> Asset:
    return Asset(id=row[0], tag=row[1], fields=_mapping(row[2]), customer_id=row[3])


def _stored_file(row: Sequence[Any]) -> StoredFile:
    return StoredFile(
        id=row[0],
        owner=row[1],
        owner_id=row[2],
        filename=row[3],
        storage_name=row[4],
        content_type=row[5],
        size=row[6],
        content_id=row[7],
        inline=bool(row[8]),
        payload=row[11],
        note=row[9],
        created_at=_parse_time(row[10]),
    )


Person = tuple[User | None, Customer | None]
"""A user (or none) and the customer an address belongs to (or none)."""


class DirectoryPart(BatchPart):
    """Users, customers and assets, their seeding, and files kept without a ticket."""

    # Who each address is, as read inside the open transaction (keyed by the address,
    # then tagged with the transaction): a new email's ticket and its acknowledgement
    # both ask, and the second answer costs no statement. A write to the people here
    # forgets them all.
    _people: dict[str, Person] | None = None
    _people_transaction: int = -1

    def _person(self, email: str) -> Person:
        """The user with this address and its customer, read once per transaction."""
        key = address_key(email)
        memo = self._people if self._people_transaction == self._transactions else None
        if self._in_transaction and memo is not None and key in memo:
            return memo[key]
        with self._reading() as connection:
            row = connection.execute(_SQL_FIND_PERSON, (key, domain_of(email))).fetchone()
        user = None if row is None or row[0] is None else User(*row[:6])
        customer = None if row is None or row[6] is None else _customer(row[6:])
        if self._in_transaction:
            if memo is None:
                memo = self._people = {}
                self._people_transaction = self._transactions
            memo[key] = (user, customer)
        return user, customer

    def _read_people(self, addresses: tuple[str, ...]) -> None:
        """Who each of ``addresses`` (keys) is, in one statement, kept for the transaction."""
        memo = self._people if self._people_transaction == self._transactions else None
        wanted = tuple(a for a in addresses if memo is None or a not in memo)
        if not wanted:
            return
        # The question rows: the first casts the columns' types, the others follow them.
        rows = " UNION ALL ".join(
            ["SELECT CAST(? AS TEXT) AS email, CAST(? AS TEXT) AS domain"]
            + ["SELECT ?, ?"] * (len(wanted) - 1)
        )
        sql = _SQL_FIND_PEOPLE.format(questions=rows)
        values = [value for address in wanted for value in (address, domain_of(address))]
        with self._reading() as connection:
            found = connection.execute(sql, values).fetchall()
        if memo is None:
            memo = self._people = {}
            self._people_transaction = self._transactions
        for row in found:
            user = None if row[1] is None else User(*row[1:7])
            memo[row[0]] = (user, None if row[7] is None else _customer(row[7:]))

    def _forget_people(self) -> None:
        """Forget who addresses are: a user or a customer was just added."""
        self._people = None

    # -- people and things -----------------------------------------------------

    def add_customer(
        self,
        name: str,
        domains: Sequence[str] = (),
        from_address: str | None = None,
        reply_address: str | None = None,
    ) -> Customer:
        """Add a customer.

        Args:
            name: The customer's name.
            domains: Email domains that belong to the customer (stored lower-cased).
                When two customers claim a domain, the first one added owns it.
            from_address: Overrides the outgoing From address for this customer.
            reply_address: Overrides the Reply-To address for this customer.

        Returns:
            The customer with its id.
        """
        keys = tuple(dict.fromkeys(key for key in map(domain_key, domains) if key))
        self._forget_people()
        with self._writing() as connection:
            customer_id = self._inserted_id(
                connection,
                _SQL_INSERT_CUSTOMER,
                (name, _json_list(keys), from_address, reply_address),
            )
            connection.executemany(_SQL_INSERT_CUSTOMER_DOMAIN, ((k, customer_id) for k in keys))
        return Customer(customer_id, name, keys, from_address, reply_address)

    def add_user(
        self,
        email: str,
        name: str = "",
        customer_id: int | None = None,
        phone: str | None = None,
        mobile: str | None = None,
    ) -> User:
        """Add an end user.

        Args:
            email: The user's address (stored lower-cased; unique).
            name: The user's name.
            customer_id: The customer the user belongs to.
            phone: Phone number.
            mobile: Mobile number.

        Returns:
            The user with its id.

        Raises:
            RepositoryError: When a user with this address exists, or the customer does not.
        """
        key = address_key(email)
        self._forget_people()
        with self._writing() as connection:
            self._require_customer(connection, customer_id)
            user_id = self._insert(
                connection, _SQL_INSERT_USER, (key, name, customer_id, phone, mobile)
            )
            if user_id is None:
                raise RepositoryError(f"a user with the address {key!r} already exists")
        return User(user_id, key, name, customer_id, phone, mobile)

    def add_asset(
        self, tag: str, fields: Mapping[str, str] | None = None, customer_id: int | None = None
    ) -> Asset:
        """Add an asset.

        Args:
            tag: The asset tag.
            fields: Other field values by name (serial number, host name, …).
            customer_id: The owning customer.

        Returns:
            The asset with its id.

        Raises:
            RepositoryError: When the customer does not exist.
        """
        values = dict(fields or {})
        with self._writing() as connection:
            self._require_customer(connection, customer_id)
            return self._insert_asset(connection, tag, values, customer_id)

    def _insert_asset(
        self, connection: Connection, tag: str, values: dict[str, str], customer_id: int | None
    ) -> Asset:
        asset_id = self._inserted_id(
            connection, _SQL_INSERT_ASSET, (tag, fold(tag), _json_map(values), customer_id)
        )
        connection.executemany(
            _SQL_INSERT_ASSET_FIELD,
            _field_rows(asset_id, values),
        )
        return Asset(asset_id, tag, values, customer_id)

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
        with self._writing() as connection:
            self._require_customer(connection, customer_id)
            row = connection.execute(_SQL_ASSET_BY_TAG, (fold(tag),)).fetchone()
            if row is None:
                return self._insert_asset(connection, tag, values, customer_id), True
            old = _asset(row)
            merged = merge_fields(old.fields, values)
            owner = old.customer_id if customer_id is None else customer_id
            connection.execute(_SQL_UPDATE_ASSET, (_json_map(merged), owner, old.id))
            before = set(_field_rows(old.id, old.fields))
            after = set(_field_rows(old.id, merged))
            connection.executemany(_SQL_DELETE_ASSET_FIELD, sorted(before - after))
            connection.executemany(_SQL_INSERT_ASSET_FIELD, sorted(after - before))
        return Asset(old.id, old.tag, merged, owner), False

    @staticmethod
    def _require_customer(connection: Connection, customer_id: int | None) -> None:
        if customer_id is None:
            return
        if connection.execute(_SQL_CUSTOMER_EXISTS, (customer_id,)).fetchone() is None:
            raise RepositoryError(f"customer {customer_id} does not exist")

    @staticmethod
    def _require_owner(connection: Connection, owner: str, owner_id: int) -> None:
        if owner == "customer":
            DirectoryPart._require_customer(connection, owner_id)
        elif connection.execute(_SQL_ASSET_EXISTS, (owner_id,)).fetchone() is None:
            raise RepositoryError(f"asset {owner_id} does not exist")

    def find_user(self, email: str) -> User | None:
        """The user with this address (compared case-insensitively), or ``None``."""
        return self._person(email)[0]

    def find_customer(self, email: str) -> Customer | None:
        """The customer of the user with this address, else the customer owning its domain."""
        return self._person(email)[1]

    def find_asset(self, field: str, value: str) -> Asset | None:
        """The asset whose ``field`` (``"tag"`` or a field name, compared as
        :func:`~halomail.tickets._common.field_key` does) equals ``value``
        (case-insensitively), or ``None``; the first one added wins."""
        key = field_key(field)
        with self._reading() as connection:
            if key == "tag":
                row = connection.execute(_SQL_ASSET_BY_TAG, (fold(value),)).fetchone()
            else:
                row = connection.execute(_SQL_ASSET_BY_FIELD, (key, fold(value))).fetchone()
        return None if row is None else _asset(row)

    def store_files(
        self,
        *,
        owner: FileOwner,
        owner_id: int,
        attachments: Sequence[StoredAttachment],
        note: str = "",
    ) -> Sequence[StoredFile]:
        """Keep files against a customer or an asset, with no ticket.

        Each file is a row of its own with its bytes as a BLOB, written in one
        transaction.

        Returns:
            The files as stored, one per attachment, in order.

        Raises:
            RepositoryError: When the customer or asset does not exist.
            ValueError: When ``owner`` is neither ``"customer"`` nor ``"asset"``.
        """
        kind = file_owner(owner)
        now = self._now()
        stamp = _time(now)
        stored: list[StoredFile] = []
        with self._writing() as connection:
            self._require_owner(connection, kind, owner_id)
            for item in attachments:
                file_id = self._insert_with_payload(
                    connection,
                    _SQL_INSERT_FILE,
                    "stored_files",
                    (
                        kind,
                        owner_id,
                        item.filename,
                        item.storage_name,
                        item.content_type,
                        item.size,
                        item.content_id,
                        int(item.inline),
                        note,
                        stamp,
                    ),
                    item.payload,
                )
                stored.append(
                    StoredFile(
                        id=file_id,
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
        with self._reading() as connection:
            rows = connection.execute(_SQL_LIST_FILES, (kind, owner_id)).fetchall()
        return [_stored_file(row) for row in rows]
