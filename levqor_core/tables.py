"""Every domain's models, imported so SQLAlchemy's metadata (and so Alembic) sees all tables."""

from levqor_core.accounts import models as accounts_models  # noqa: F401
from levqor_core.apijobs import models as apijobs_models  # noqa: F401
from levqor_core.billing import models as billing_models  # noqa: F401
from levqor_core.keys import models as keys_models  # noqa: F401
from levqor_core.metering import models as metering_models  # noqa: F401
from levqor_core.ops import models as ops_models  # noqa: F401
from levqor_core.requestlog import models as requestlog_models  # noqa: F401
from levqor_core.webhooks import models as webhooks_models  # noqa: F401
