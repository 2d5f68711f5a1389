"""Build a Tryton company for the tests, in-process with proteus (no server running).

Run as `python tryton_setup.py TRYTOND_CONF DBNAME PASSWORD`: a Belgian company with the
Belgian chart (NL), EUR/USD/SEK, fiscal years (one closed), a closed expense account, the API
user `gateway` and a second user `lockcheck` that only the wrong-password test logs in as.
The company also answers to the customer identifiers of the corpus documents, the way a dossier's
company is the customer of the purchase invoices it receives.
"""

from __future__ import annotations

import datetime as dt
import sys
from decimal import Decimal

from proteus import Model, Wizard
from proteus import config as pconfig

CORPUS_CUSTOMERS = (
    "SE4598375937",
    "SE459837593701",
    "EL061828591",
    "BE0000000295",
    "DE163372785",
    "BE0882555389",
    "BE0899167234",
    "987654325",
)
CLOSED_YEAR = 2014
FOREIGN_TAXES = (
    ("Buitenlandse BTW 25%", "S", "0.25"),
    ("Buitenlandse BTW 16%", "S", "0.16"),
    ("Buitenlandse BTW 15%", "S", "0.15"),
    ("Vrijgesteld van BTW", "E", "0"),
    ("Buiten het toepassingsgebied van de BTW", "O", "0"),
)


def main(conf_file: str, dbname: str, password: str) -> None:
    cfg = pconfig.set_trytond(database=dbname, config_file=conf_file)
    from trytond.modules.account.tests.tools import create_fiscalyear
    from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
    from trytond.modules.company.tests.tools import create_company, get_company

    Party, Currency, Country = (
        Model.get(m) for m in ("party.party", "currency.currency", "country.country")
    )
    User, Group, ModelData = (Model.get(m) for m in ("res.user", "res.group", "ir.model.data"))
    AccountTemplate, Account = Model.get("account.account.template"), Model.get("account.account")

    eur = Currency(name="Euro", code="EUR", symbol="€", rounding=Decimal("0.01"))
    eur.save()
    for code, name in (("USD", "US Dollar"), ("SEK", "Swedish Krona")):
        Currency(name=name, code=code, symbol=code, rounding=Decimal("0.01")).save()
    be = Country(name="Belgium", code="BE", code3="BEL", code_numeric="056")
    be.save()

    cparty = Party(name="Gateway Test BV")
    ident = cparty.identifiers.new()
    ident.type, ident.code = "eu_vat", "BE0123456749"
    for code in CORPUS_CUSTOMERS:
        cparty.identifiers.new().code = code
    addr = cparty.addresses[0] if cparty.addresses else cparty.addresses.new()
    addr.street, addr.postal_code, addr.city, addr.country = "Kerkstraat 1", "9000", "Gent", be
    cparty.save()
    create_company(party=cparty, currency=eur)
    company = get_company()

    chart = Wizard("account.create_chart")
    chart.execute("account")
    root = ModelData.get_id("account_be.root_nl", cfg.context)
    chart.form.account_template = AccountTemplate(root)
    chart.form.company = company
    chart.execute("create_account")
    (chart.form.category_account_expense,) = Account.find([("code", "=", "604")])
    (chart.form.category_account_revenue,) = Account.find([("code", "=", "700")])
    chart.execute("create_properties")

    _foreign_taxes(company)

    (closed,) = Account.find([("code", "=", "608")])
    closed.closed = True
    closed.save()

    today = dt.date.today()
    for year in (CLOSED_YEAR, today.year - 1, today.year):
        fy = create_fiscalyear(company, (dt.date(year, 1, 1), dt.date(year, 12, 31)))
        fy.name = str(year)
        set_fiscalyear_invoice_sequences(fy)
        fy.save()
        fy.click("create_period")
        if year == CLOSED_YEAR:
            for period in fy.periods:
                period.click("close")
            fy.click("close")

    Company = Model.get("company.company")
    for login in ("gateway", "lockcheck"):
        user = User(name=login.title(), login=login, password=password)
        user.companies.append(Company(company.id))
        user.company = Company(company.id)
        for fs_id in ("account.group_account", "party.group_party_admin"):
            user.groups.append(Group(ModelData.get_id(fs_id, cfg.context)))
        user.save()


def _foreign_taxes(company: object) -> None:
    """Purchase taxes the Belgian chart lacks but the corpus uses (Nordic rates, exempt, outside
    scope), so the package can accept those documents too."""
    Tax, TaxGroup, Account = (
        Model.get(m) for m in ("account.tax", "account.tax.group", "account.account")
    )
    (vat_account,) = Account.find([("code", "=", "411")])
    group = TaxGroup.find([("kind", "=", "purchase")])[0]
    for name, category, rate in FOREIGN_TAXES:
        Tax(
            name=name, description=name, type="percentage", rate=Decimal(rate), group=group,
            invoice_account=vat_account, credit_note_account=vat_account, company=company,
            unece_code="VAT", unece_category_code=category,
        ).save()  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:4])
