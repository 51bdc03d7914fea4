"""Reading a function's small forms (``POST /token``, the dashboard's login and logout):
bounded in size and read into memory, refused when coded or not text in their charset, and
validated by a marshmallow schema (400 naming each bad field, never quoting a value)."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

from common.errors import BadRequest, ContentEncodingUnsupported, TransferCodingNotImplemented
from common.http import Call

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

MAX_FORM_BYTES = 16 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: A field name quoted back in a message: one of the forms' own kind, never arbitrary text.
_FIELD_NAME_SHOWN = re.compile(r"[a-z_]{1,32}")


def read_form(call: Call) -> MultiDict[str, str]:
    """The request's small urlencoded/multipart form (file parts are left out). Every read of
    a form goes through here: at most ``MAX_FORM_BYTES`` of the body are read, into memory,
    and parsed from there, so a large part is never spooled to a temporary file (which a
    read-only root could not hold) and a chunked body is bounded like a declared one."""
    if call.form is not None:
        return call.form
    request = call.request
    if request.mimetype not in FORM_TYPES:
        raise BadRequest("Send the fields as an application/x-www-form-urlencoded form.")
    _require_plain_body(request)
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise BadRequest("The form is too large.")
    body = request.stream.read(MAX_FORM_BYTES + 1)
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest("The form is too large.")
    from werkzeug.formparser import parse_form_data

    # Media types are case-insensitive (RFC 9110 8.3.1) but werkzeug's parser matches them
    # exactly: "Application/x-www-form-urlencoded" read as an empty form. The parameters
    # (a multipart boundary) keep their case.
    media_type, semicolon, parameters = request.headers.get("Content-Type", "").partition(";")
    environ = {
        **request.environ,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": media_type.strip().lower() + semicolon + parameters,
    }
    if media_type.strip().lower() == FORM_TYPES[0]:
        _require_utf8_fields(body)
    else:
        _require_text_parts(body, request.mimetype_params.get("boundary", ""))
    _, call.form, _ = parse_form_data(environ, max_form_memory_size=MAX_FORM_BYTES)
    return call.form


def _require_plain_body(request: Any) -> None:
    """A compressed form is refused, not read as text (a gzip body was a wrong password,
    counted towards the lock): 415 for a content coding, 501 for a transfer coding but
    chunked (gunicorn passes gzip, deflate and compress on without decoding them)."""
    if _codings(request.headers.get("Content-Encoding", "")) - {"identity"}:
        raise ContentEncodingUnsupported()
    if _codings(request.headers.get("Transfer-Encoding", "")) - {"chunked"}:
        raise TransferCodingNotImplemented()


def _codings(header: str) -> set[str]:
    """A header's list of codings (RFC 9110 5.6.1: empty elements do not count)."""
    return {coding.strip().lower() for coding in header.split(",")} - {""}


def _require_utf8_fields(body: bytes) -> None:
    """A urlencoded form's names and values are UTF-8 (RFC 6749 Appendix B). werkzeug keeps a
    bad escape as text (``%FF``: another password than the one sent, a failed login counted
    towards the lock) or drops the whole form (a 400 blaming fields that were fine)."""
    from urllib.parse import unquote_to_bytes

    # One pass over the whole body first: its separators are ASCII, so it decodes exactly
    # when every field does; fields are looked at one by one only to name the bad one.
    try:
        unquote_to_bytes(body).decode()
        return
    except UnicodeDecodeError:
        pass
    for field in body.split(b"&"):
        name, _, value = field.partition(b"=")
        try:
            shown = unquote_to_bytes(name.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            raise BadRequest("A form field's name is not valid UTF-8.") from None
        try:
            unquote_to_bytes(value.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            raise _bad_value(shown) from None


def _bad_value(name: str | None, charset: str = "utf-8") -> BadRequest:
    # One of the parser's few charsets (never client text), in its usual spelling.
    label = {"utf-8": "UTF-8", "iso-8859-1": "ISO-8859-1"}.get(charset, "US-ASCII")
    if name and _FIELD_NAME_SHOWN.fullmatch(name):
        # Per field, as the other field errors of a form are.
        return BadRequest(
            f"The value of {name} is not valid {label}.",
            details={name: [f"Not valid {label}."]},
        )
    return BadRequest(f"The value of a form field is not valid {label}.")


def _require_text_parts(body: bytes, boundary: str) -> None:
    """A multipart form's fields decode in their declared charset, UTF-8 by default: werkzeug
    replaces a bad byte with U+FFFD (another password than the one sent, counted towards the
    lock). Same parser, same charset rule; a malformed body is left for werkzeug to refuse."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.formparser import MultiPartParser
    from werkzeug.sansio.multipart import Data, Epilogue, Field, MultipartDecoder, NeedData

    if not boundary:
        return
    charset_of = MultiPartParser().get_part_charset
    try:
        # ASCII as werkzeug takes it: a boundary it cannot use is its own 400 (an empty form).
        decoder = MultipartDecoder(boundary.encode("ascii"), max_form_memory_size=MAX_FORM_BYTES)
        decoder.receive_data(body)
        decoder.receive_data(None)
        field: Field | None = None
        chunks: list[bytes] = []
        event = decoder.next_event()
        while not isinstance(event, Epilogue | NeedData):
            if isinstance(event, Data):
                chunks.append(event.data)
                if field is not None and not event.more_data:
                    charset = charset_of(field.headers)
                    try:
                        b"".join(chunks).decode(charset)
                    except UnicodeDecodeError:
                        raise _bad_value(field.name, charset) from None
            else:  # a new part: a field, or a file (whose bytes are its own business)
                field = event if isinstance(event, Field) else None
                chunks = []
            event = decoder.next_event()
    except (ValueError, HTTPException):
        return


def form_fields(call: Call, schema: Any) -> dict[str, Any]:
    """A small urlencoded/multipart form validated by ``schema``; 400 when malformed."""
    from marshmallow import ValidationError

    from common.params import load_form

    form = read_form(call)
    if call.request.args:
        raise BadRequest("Send the fields in the form body, not in the URL.")
    try:
        return load_form(schema, form)
    except ValidationError as exc:
        fields = ", ".join(sorted(str(key) for key in exc.messages_dict))
        # Per field, as the APIs' 422 has it: the forms' own fields only (unknown ones are
        # excluded), and marshmallow's messages never quote a value.
        details = {str(key): list(value) for key, value in exc.messages_dict.items()}
        raise BadRequest(f"Missing or invalid form fields: {fields}.", details=details) from None
