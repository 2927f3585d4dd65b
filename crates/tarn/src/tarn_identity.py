"""Tarn's identity provider for a compute instance's JupyterLab. Tarn's proxy has already
checked who the caller is (their Tarn token or studio session) and that they may open this
instance; it proves that to JupyterLab with a secret header only it knows. JupyterLab has no
token of its own, so none can reach a browser (JupyterLab puts its token in every page)."""

import hmac

from jupyter_server.auth.identity import IdentityProvider, User
from traitlets import Unicode


class TarnIdentityProvider(IdentityProvider):
    secret = Unicode("", config=True, help="The X-Tarn-Lab-Token value Tarn's proxy sends.")
    username = Unicode("user", config=True, help="The Tarn user the instance belongs to.")
    need_token = False

    def get_user(self, handler):
        sent = handler.request.headers.get("X-Tarn-Lab-Token", "")
        if self.secret and hmac.compare_digest(sent, self.secret):
            name = self.username
            return User(username=name, name=name, display_name=name, initials=name[:1].upper())
        return None

    @property
    def auth_enabled(self):
        return True

    @property
    def login_available(self):
        return False

    def is_token_authenticated(self, handler):
        return False
