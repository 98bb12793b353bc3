"""A fake Stripe API: a real HTTP server on 127.0.0.1 speaking Stripe's form-encoded v1 API.

It covers the calls levqor_core.billing makes (products, prices listed by lookup_keys, customers,
Checkout Sessions, billing portal sessions), keeps objects in memory with Stripe's shapes and
error bodies, honours Idempotency-Key, and can play Stripe's part after a checkout
(`complete_checkout`) so tests can build the webhook events Stripe would send.
"""

import copy
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

API_KEY_RE = re.compile(r"^(sk|rk)_test_[A-Za-z0-9_]+$")


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict:
        error = {"message": self.message, "type": "invalid_request_error"}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        if self.status == 401:
            error = {"message": self.message, "type": "invalid_request_error"}
        return {"error": error}


def decode_form(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's bracket notation (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = [p for p in re.split(r"\[|\]", key) if p != ""] if "[" in key else [key]
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node):
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def _bool(value, param: str) -> bool:
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    raise StripeError(400, f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param)


def _int(value, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param) from None


def _require(params: dict, *names: str) -> None:
    for name in names:
        if params.get(name) in (None, ""):
            raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)


class FakeStripe:
    """In-memory Stripe account served over HTTP. Use as a context manager or start()/close()."""

    def __init__(self):
        self.lock = threading.RLock()
        self.products: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.customers: dict[str, dict] = {}
        self.checkout_sessions: dict[str, dict] = {}
        self.portal_sessions: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.idempotent: dict[str, tuple[str, dict, int, dict]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call, in order
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "FakeStripe":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def do_GET(self):
                fake._serve(self)

            def do_POST(self):
                fake._serve(self)

            def do_DELETE(self):
                fake._serve(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-stripe", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def mutations(self) -> list[tuple[str, str]]:
        """The state-changing calls received so far."""
        return [r for r in self.requests if r[0] != "GET"]

    # -- HTTP ----------------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode() if length else ""
        pairs = parse_qsl(split.query, keep_blank_values=True) + parse_qsl(raw, keep_blank_values=True)
        params = decode_form(pairs)
        with self.lock:
            self.requests.append((h.command, split.path))
            idem = None
            try:
                self._authenticate(h.headers.get("Authorization", ""))
                idem = h.headers.get("Idempotency-Key") if h.command == "POST" else None
                if idem and idem in self.idempotent:
                    path, old_params, status, body = self.idempotent[idem]
                    if path != split.path or old_params != params:
                        raise StripeError(
                            400,
                            "Keys for idempotent requests can only be used with the same parameters they were "
                            "first used with.",
                            code="idempotency_key_in_use",
                        )
                    return self._send(h, status, body, replayed=True)
                status, body = 200, self._route(h.command, split.path, params)
            except StripeError as err:
                status, body = err.status, err.body()
            if idem and status < 500:
                self.idempotent[idem] = (split.path, params, status, body)
        self._send(h, status, body)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: dict, replayed: bool = False) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Request-Id", "req_" + secrets.token_hex(7))
        if replayed:
            h.send_header("Idempotent-Replayed", "true")
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _authenticate(header: str) -> None:
        key = header.removeprefix("Bearer ").strip()
        if not key:
            raise StripeError(401, "You did not provide an API key.")
        if not API_KEY_RE.match(key):
            raise StripeError(401, f"Invalid API Key provided: {key[:8]}{'*' * 8}{key[-4:]}")

    def _route(self, method: str, path: str, params: dict) -> dict:
        routes = [
            ("GET", r"/v1/products", lambda: self._list(self.products, params, "/v1/products")),
            ("POST", r"/v1/products", lambda: self._create_product(params)),
            ("GET", r"/v1/products/(?P<id>[^/]+)", lambda id: self._get(self.products, id, "product", params)),
            ("POST", r"/v1/products/(?P<id>[^/]+)", lambda id: self._update_product(id, params)),
            ("GET", r"/v1/prices", lambda: self._list_prices(params)),
            ("POST", r"/v1/prices", lambda: self._create_price(params)),
            ("GET", r"/v1/prices/(?P<id>[^/]+)", lambda id: self._get(self.prices, id, "price", params)),
            ("POST", r"/v1/prices/(?P<id>[^/]+)", lambda id: self._update_price(id, params)),
            ("POST", r"/v1/customers", lambda: self._create_customer(params)),
            ("GET", r"/v1/customers/(?P<id>[^/]+)", lambda id: self._get(self.customers, id, "customer", params)),
            ("POST", r"/v1/checkout/sessions", lambda: self._create_checkout_session(params)),
            ("GET", r"/v1/checkout/sessions", lambda: self._list_checkout_sessions(params)),
            ("POST", r"/v1/checkout/sessions/(?P<id>[^/]+)/expire", lambda id: self._expire_checkout_session(id)),
            (
                "GET",
                r"/v1/checkout/sessions/(?P<id>[^/]+)",
                lambda id: self._get(self.checkout_sessions, id, "checkout.session", params),
            ),
            ("POST", r"/v1/billing_portal/sessions", lambda: self._create_portal_session(params)),
            (
                "GET",
                r"/v1/subscriptions/(?P<id>[^/]+)",
                lambda id: self._get(self.subscriptions, id, "subscription", params),
            ),
            ("DELETE", r"/v1/subscriptions/(?P<id>[^/]+)", lambda id: self._cancel_subscription(id)),
            ("GET", r"/v1/subscriptions", lambda: self._list_subscriptions(params)),
        ]
        for verb, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return action(**match.groupdict())
        raise StripeError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at "
            "https://support.stripe.com/.",
        )

    # -- generic helpers -------------------------------------------------------------------------

    @staticmethod
    def _new_id(prefix: str) -> str:
        return f"{prefix}_{secrets.token_urlsafe(18).replace('-', 'a').replace('_', 'b')}"

    def _expanded(self, obj: dict, expand: list[str], prefix: str = "") -> dict:
        obj = copy.deepcopy(obj)
        for path in expand:
            if prefix and not path.startswith(prefix):
                continue
            field = path[len(prefix) :]
            if field == "product" and isinstance(obj.get("product"), str):
                obj["product"] = copy.deepcopy(self.products[obj["product"]])
            elif field == "customer" and isinstance(obj.get("customer"), str):
                obj["customer"] = copy.deepcopy(self.customers[obj["customer"]])
        return obj

    def _get(self, store: dict, id: str, kind: str, params: dict) -> dict:
        if id not in store:
            raise StripeError(404, f"No such {kind.split('.')[-1]}: '{id}'", code="resource_missing", param="id")
        return self._expanded(store[id], params.get("expand") or [])

    def _list(self, store: dict, params: dict, url: str, items: list[dict] | None = None) -> dict:
        items = list(store.values()) if items is None else items
        if "active" in params:
            active = _bool(params["active"], "active")
            items = [i for i in items if i.get("active") == active]
        items.sort(key=lambda o: o["created"], reverse=True)
        limit = _int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise StripeError(400, "This value must be between 1 and 100.", code="parameter_invalid_integer")
        expand = params.get("expand") or []
        data = [self._expanded(i, expand, "data.") for i in items[:limit]]
        return {"object": "list", "data": data, "has_more": len(items) > limit, "url": url}

    @staticmethod
    def _metadata(params: dict, current: dict | None = None) -> dict:
        metadata = dict(current or {})
        given = params.get("metadata")
        if given == "":
            return {}
        for key, value in (given or {}).items():
            if value == "":
                metadata.pop(key, None)
            else:
                metadata[key] = str(value)
        return metadata

    # -- products and prices -----------------------------------------------------------------------

    def _create_product(self, params: dict) -> dict:
        _require(params, "name")
        pid = params.get("id") or self._new_id("prod")
        if pid in self.products:
            raise StripeError(400, f"Product already exists: '{pid}'", code="resource_already_exists", param="id")
        now = int(time.time())
        self.products[pid] = {
            "id": pid,
            "object": "product",
            "active": _bool(params.get("active", "true"), "active"),
            "created": now,
            "default_price": None,
            "description": params.get("description") or None,
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": self._metadata(params),
            "name": params["name"],
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "type": "service",
            "unit_label": None,
            "updated": now,
            "url": None,
        }
        return copy.deepcopy(self.products[pid])

    def _update_product(self, id: str, params: dict) -> dict:
        product = self.products.get(id)
        if product is None:
            raise StripeError(404, f"No such product: '{id}'", code="resource_missing", param="id")
        for field in ("name", "description"):
            if field in params:
                product[field] = params[field] or None
        if "active" in params:
            product["active"] = _bool(params["active"], "active")
        if "metadata" in params:
            product["metadata"] = self._metadata(params, product["metadata"])
        product["updated"] = int(time.time())
        return copy.deepcopy(product)

    def _list_prices(self, params: dict) -> dict:
        items = list(self.prices.values())
        keys = params.get("lookup_keys")
        if keys is not None:
            keys = keys if isinstance(keys, list) else [keys]
            if len(keys) > 10:
                raise StripeError(400, "You may only specify up to 10 lookup_keys.", param="lookup_keys")
            items = [p for p in items if p["lookup_key"] in keys]
        if params.get("product"):
            items = [p for p in items if p["product"] == params["product"]]
        return self._list(self.prices, params, "/v1/prices", items)

    def _claim_lookup_key(self, lookup_key: str | None, transfer, new_id: str) -> None:
        if not lookup_key:
            return
        holder = next((p for p in self.prices.values() if p["lookup_key"] == lookup_key and p["id"] != new_id), None)
        if holder is None:
            return
        if not _bool(transfer or "false", "transfer_lookup_key"):
            raise StripeError(
                400,
                f"A price (`{holder['id']}`) already uses the lookup key `{lookup_key}`. Set transfer_lookup_key "
                "to move it.",
                code="lookup_key_already_exists",
                param="lookup_key",
            )
        holder["lookup_key"] = None

    def _create_price(self, params: dict) -> dict:
        _require(params, "currency", "product")
        if params["product"] not in self.products:
            raise StripeError(400, f"No such product: '{params['product']}'", code="resource_missing", param="product")
        if "unit_amount" not in params:
            raise StripeError(
                400, "Missing required param: unit_amount.", code="parameter_missing", param="unit_amount"
            )
        amount = _int(params["unit_amount"], "unit_amount")
        if amount < 0:
            raise StripeError(400, "This value must be greater than or equal to 0.", param="unit_amount")
        recurring = params.get("recurring")
        if recurring is not None:
            interval = recurring.get("interval")
            if interval not in ("day", "week", "month", "year"):
                raise StripeError(400, f"Invalid recurring[interval]: {interval}", param="recurring[interval]")
            recurring = {
                "interval": interval,
                "interval_count": _int(recurring.get("interval_count", 1), "recurring[interval_count]"),
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            }
        pid = self._new_id("price")
        self._claim_lookup_key(params.get("lookup_key"), params.get("transfer_lookup_key"), pid)
        self.prices[pid] = {
            "id": pid,
            "object": "price",
            "active": _bool(params.get("active", "true"), "active"),
            "billing_scheme": "per_unit",
            "created": int(time.time()),
            "currency": params["currency"].lower(),
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": params.get("lookup_key") or None,
            "metadata": self._metadata(params),
            "nickname": params.get("nickname") or None,
            "product": params["product"],
            "recurring": recurring,
            "tax_behavior": params.get("tax_behavior", "unspecified"),
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": amount,
            "unit_amount_decimal": str(amount),
        }
        return self._expanded(self.prices[pid], params.get("expand") or [])

    def _update_price(self, id: str, params: dict) -> dict:
        price = self.prices.get(id)
        if price is None:
            raise StripeError(404, f"No such price: '{id}'", code="resource_missing", param="id")
        if "unit_amount" in params or "currency" in params:
            raise StripeError(400, "Received unknown parameter: unit_amount", code="parameter_unknown")
        if "lookup_key" in params:
            self._claim_lookup_key(params["lookup_key"], params.get("transfer_lookup_key"), id)
            price["lookup_key"] = params["lookup_key"] or None
        if "active" in params:
            price["active"] = _bool(params["active"], "active")
        if "nickname" in params:
            price["nickname"] = params["nickname"] or None
        if "metadata" in params:
            price["metadata"] = self._metadata(params, price["metadata"])
        return copy.deepcopy(price)

    # -- customers, Checkout, billing portal ---------------------------------------------------------

    def _create_customer(self, params: dict) -> dict:
        cid = self._new_id("cus")
        self.customers[cid] = {
            "id": cid,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": int(time.time()),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description") or None,
            "email": params.get("email") or None,
            "invoice_prefix": secrets.token_hex(4).upper(),
            "livemode": False,
            "metadata": self._metadata(params),
            "name": params.get("name") or None,
            "phone": None,
            "preferred_locales": [],
            "tax_exempt": "none",
        }
        return copy.deepcopy(self.customers[cid])

    def _create_checkout_session(self, params: dict) -> dict:
        _require(params, "mode")
        mode = params["mode"]
        if mode not in ("payment", "setup", "subscription"):
            raise StripeError(400, "Invalid mode: must be one of payment, setup, or subscription", param="mode")
        if params.get("ui_mode", "hosted") == "hosted":
            _require(params, "success_url")
        customer = params.get("customer")
        if customer and customer not in self.customers:
            raise StripeError(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        line_items = params.get("line_items") or []
        if not line_items:
            raise StripeError(400, "Missing required param: line_items.", code="parameter_missing", param="line_items")
        for i, item in enumerate(line_items):
            price = self.prices.get(item.get("price", ""))
            if price is None:
                raise StripeError(
                    400,
                    f"No such price: '{item.get('price')}'",
                    code="resource_missing",
                    param=f"line_items[{i}][price]",
                )
            if not price["active"]:
                raise StripeError(400, f"The price `{price['id']}` is not active.", param=f"line_items[{i}][price]")
            if mode == "subscription" and price["type"] != "recurring":
                raise StripeError(
                    400,
                    "You specified `subscription` mode but passed non-recurring prices.",
                    param=f"line_items[{i}][price]",
                )
        sid = "cs_test_" + secrets.token_hex(24)
        now = int(time.time())
        session = {
            "id": sid,
            "object": "checkout.session",
            "amount_subtotal": None,
            "amount_total": None,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": None,
            "customer": customer,
            "customer_email": params.get("customer_email"),
            "expires_at": now + 86400,
            "invoice": None,
            "livemode": False,
            "metadata": self._metadata(params),
            "mode": mode,
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": params.get("success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{sid}",
            # Not part of Stripe's object: what the fake needs to play the rest of the checkout.
            "_line_items": [
                {"price": i["price"], "quantity": _int(i.get("quantity", 1), "quantity")} for i in line_items
            ],
            "_subscription_data": params.get("subscription_data") or {},
        }
        self.checkout_sessions[sid] = session
        return self._public(session)

    def _list_checkout_sessions(self, params: dict) -> dict:
        """GET /v1/checkout/sessions, filtered by `customer` and `status` as Stripe filters them."""
        items = [
            self._public(cs)
            for cs in self.checkout_sessions.values()
            if all(cs.get(name) == params[name] for name in ("customer", "status") if name in params)
        ]
        return self._list({}, params, "/v1/checkout/sessions", items)

    def _expire_checkout_session(self, sid: str) -> dict:
        """POST /v1/checkout/sessions/{id}/expire: an open session can no longer be paid."""
        session = self.checkout_sessions.get(sid)
        if session is None:
            raise StripeError(404, f"No such checkout.session: '{sid}'", code="resource_missing", param="id")
        if session["status"] != "open":
            raise StripeError(400, 'Only Checkout Sessions with a status in ["open"] can be expired.')
        session["status"] = "expired"
        return self._public(session)

    @staticmethod
    def _public(obj: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}

    def _create_portal_session(self, params: dict) -> dict:
        _require(params, "customer")
        if params["customer"] not in self.customers:
            raise StripeError(
                400, f"No such customer: '{params['customer']}'", code="resource_missing", param="customer"
            )
        bid = self._new_id("bps")
        session = {
            "id": bid,
            "object": "billing_portal.session",
            "configuration": "bpc_" + secrets.token_hex(12),
            "created": int(time.time()),
            "customer": params["customer"],
            "flow": None,
            "livemode": False,
            "locale": None,
            "on_behalf_of": None,
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/test_{secrets.token_hex(16)}",
        }
        self.portal_sessions[bid] = session
        return copy.deepcopy(session)

    # -- playing Stripe's part (for tests) ----------------------------------------------------------

    def complete_checkout(self, session_id: str, *, period_start: int, period_end: int) -> tuple[dict, dict]:
        """The customer paid: the session completes and a subscription starts, as Stripe does it.
        Returns (checkout session, subscription) as the webhook events carry them."""
        with self.lock:
            session = self.checkout_sessions[session_id]
            if session["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {session['status']}: it cannot be paid")
            if not session["customer"]:
                session["customer"] = self._create_customer({"email": session.get("customer_email") or ""})["id"]
            sub_id = self._new_id("sub")
            items = []
            for li in session["_line_items"]:
                price = copy.deepcopy(self.prices[li["price"]])
                items.append(
                    {
                        "id": self._new_id("si"),
                        "object": "subscription_item",
                        "created": period_start,
                        "current_period_start": period_start,
                        "current_period_end": period_end,
                        "metadata": {},
                        "price": price,
                        "quantity": li["quantity"],
                        "subscription": sub_id,
                    }
                )
            self.subscriptions[sub_id] = {
                "id": sub_id,
                "object": "subscription",
                "billing_cycle_anchor": period_start,
                "cancel_at": None,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "collection_method": "charge_automatically",
                "created": period_start,
                "currency": items[0]["price"]["currency"] if items else "usd",
                "customer": session["customer"],
                "ended_at": None,
                "items": {
                    "object": "list",
                    "data": items,
                    "has_more": False,
                    "url": f"/v1/subscription_items?subscription={sub_id}",
                },
                "latest_invoice": self._new_id("in"),
                "livemode": False,
                "metadata": dict(session["_subscription_data"].get("metadata") or {}),
                "start_date": period_start,
                "status": "active",
            }
            session.update(status="complete", payment_status="paid", subscription=sub_id)
            return self._public(session), copy.deepcopy(self.subscriptions[sub_id])

    def _list_subscriptions(self, params: dict) -> dict:
        """GET /v1/subscriptions: by `customer`; without `status` Stripe leaves canceled ones out,
        `status=all` lists every one."""
        status = params.get("status")
        items = [
            sub
            for sub in self.subscriptions.values()
            if ("customer" not in params or sub.get("customer") == params["customer"])
            and (status == "all" or (sub["status"] == status if status else sub["status"] != "canceled"))
        ]
        return self._list({}, params, "/v1/subscriptions", items)

    def _cancel_subscription(self, sub_id: str) -> dict:
        """DELETE /v1/subscriptions/{id}: canceled at once, as Stripe does."""
        with self.lock:
            sub = self.subscriptions.get(sub_id)
            if sub is None:
                raise StripeError(404, f"No such subscription: '{sub_id}'", code="resource_missing")
            now = int(time.time())
            sub.update(status="canceled", canceled_at=now, ended_at=now)
            return copy.deepcopy(sub)

    def change_subscription(self, sub_id: str, **changes) -> dict:
        """Change a subscription as the customer portal or a dunning run would; returns it."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            lookup_key = changes.pop("lookup_key", None)
            period = changes.pop("period", None)
            for item in sub["items"]["data"]:
                if lookup_key:
                    item["price"] = copy.deepcopy(
                        next(p for p in self.prices.values() if p["lookup_key"] == lookup_key)
                    )
                if period:
                    item["current_period_start"], item["current_period_end"] = period
            sub.update(changes)
            return copy.deepcopy(sub)
