"""Domain vocabularies shared by every service and partner system.

Values are stable wire strings: renaming one is a breaking contract change.
"""

from __future__ import annotations

from enum import StrEnum


class ResidenceTitle(StrEnum):
    """Residence titles under the Aufenthaltsgesetz (AufenthG, the Residence Act)."""

    TEMPORARY_PROTECTION_24 = "aufenthg_24"  # §24: temporary protection (e.g. Ukraine)
    ASYLUM_25_1 = "aufenthg_25_1"  # §25(1): recognised entitlement to asylum
    REFUGEE_25_2 = "aufenthg_25_2"  # §25(2): refugee or subsidiary protection
    WELL_INTEGRATED_YOUTH_25A = "aufenthg_25a"  # §25a: well-integrated young people
    SUSTAINABLE_INTEGRATION_25B = "aufenthg_25b"  # §25b: sustainable integration
    CHANCEN_104C = "aufenthg_104c"  # §104c: Chancen-Aufenthaltsrecht (18 months, no extension)
    DULDUNG_60A = "duldung_60a"  # §60a: Duldung, suspension of deportation
    AUFENTHALTSGESTATTUNG = "aufenthaltsgestattung"  # permission to stay during the asylum procedure
    NIEDERLASSUNGSERLAUBNIS = "niederlassungserlaubnis"  # settlement permit
    EU_FREE_MOVEMENT = "eu_free_movement"
    OTHER = "other"


class Need(StrEnum):
    LANGUAGE_COURSE = "language_course"
    INTEGRATION_COURSE = "integration_course"
    RECOGNITION_OF_QUALIFICATIONS = "recognition_of_qualifications"
    VOCATIONAL_TRAINING = "vocational_training"
    JOB_PLACEMENT = "job_placement"
    CHILDCARE = "childcare"
    SCHOOL_ENROLMENT = "school_enrolment"
    PSYCHOSOCIAL_SUPPORT = "psychosocial_support"
    HOUSING = "housing"
    RESIDENCE_LAW_COUNSELLING = "residence_law_counselling"
    INTERPRETER = "interpreter"
    DEBT_COUNSELLING = "debt_counselling"
    OTHER = "other"


class DataCategory(StrEnum):
    """Categories of personal data a consent can cover and a disclosure can carry."""

    IDENTITY = "identity"
    CONTACT = "contact"
    RESIDENCE_STATUS = "residence_status"
    NEEDS = "needs"
    EDUCATION_QUALIFICATIONS = "education_qualifications"
    HEALTH = "health"  # special category under GDPR Art. 9

    @property
    def is_special_category(self) -> bool:
        return self is DataCategory.HEALTH


class OrgKind(StrEnum):
    JOBCENTER = "jobcenter"
    WELFARE_ASSOCIATION = "welfare_association"
    KOMMUNALES_INTEGRATIONSZENTRUM = "kommunales_integrationszentrum"
    INTEGRATION_MANAGEMENT = "integration_management"  # Kommunales Integrationsmanagement (KIM)
    IMMIGRATION_OFFICE = "immigration_office"  # Ausländerbehörde
    BENEFITS_OFFICE = "benefits_office"  # e.g. AsylbLG benefits (Sozialamt)


class Purpose(StrEnum):
    REFERRAL = "referral"
    CASE_COORDINATION = "case_coordination"
    CONTACT_FOR_NOTIFICATIONS = "contact_for_notifications"
    INTERPRETER_BOOKING = "interpreter_booking"


class DeclineReason(StrEnum):
    NO_CAPACITY = "no_capacity"
    NOT_ELIGIBLE = "not_eligible"
    CLIENT_UNREACHABLE = "client_unreachable"
    OTHER = "other"


class DeadlineKind(StrEnum):
    RESIDENCE_TITLE_EXPIRY = "residence_title_expiry"
    CHANCEN_AUFENTHALT_END = "chancen_aufenthalt_end"  # §104c AufenthG
    INTEGRATION_COURSE_ELIGIBILITY = "integration_course_eligibility"
    REFERRAL_ANSWER_DUE = "referral_answer_due"
    APPOINTMENT = "appointment"


class LegalRegime(StrEnum):
    """Benefit regimes a client moves between (Rechtskreiswechsel)."""

    ASYLBLG = "asylblg"  # Asylbewerberleistungsgesetz
    SGB_II = "sgb_ii"  # basic income support, Jobcenter
    SGB_III = "sgb_iii"  # employment promotion, Agentur für Arbeit
    SGB_VIII = "sgb_viii"  # child and youth welfare
    SGB_XII = "sgb_xii"  # social assistance
    NONE = "none"


class NotificationChannel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"


class NotificationFailure(StrEnum):
    TEMPORARY = "temporary-failure"
    PERMANENT = "permanent-failure"
    TECHNICAL = "technical-failure"


class RecipientKind(StrEnum):
    CLIENT = "client"
    ORGANISATION = "organisation"
    PARTNER_SYSTEM = "partner_system"
