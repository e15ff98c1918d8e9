//! The stable identifiers of the guideline (clinical spec): rule ids, alert codes, volume codes and
//! finding codes. Each is an enum so that a rule cannot name an id the profile lacks; the profile
//! supplies the texts and references for every one of them.

macro_rules! id_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(#[doc = $text] $variant,)+
        }

        impl $name {
            /// Every value, in the order of the clinical specification.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable string of the specification.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Looks a string of the specification up.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

id_enum! {
    /// A rule of clinical spec §3, in evaluation order.
    RuleId {
        GateMetastatic => "GATE-METASTATIC",
        IndAfterPreopRt => "IND-AFTER-PREOP-RT",
        IndUnresectable => "IND-UNRESECTABLE",
        IndMarginal => "IND-MARGINAL",
        IndReexcision => "IND-REEXCISION",
        IndPositiveMargin => "IND-POSITIVE-MARGIN",
        IndCompartmental => "IND-COMPARTMENTAL",
        IndHgDeepLarge => "IND-HG-DEEP-LARGE",
        IndHgDeepSmall => "IND-HG-DEEP-SMALL",
        IndHgSuperficial => "IND-HG-SUPERFICIAL",
        IndGradeUnknown => "IND-GRADE-UNKNOWN",
        IndLowRisk => "IND-LOW-RISK",
        ModRpsCap => "MOD-RPS-CAP",
        ModRpsPostop => "MOD-RPS-POSTOP",
        ModSiteUnclassified => "MOD-SITE-UNCLASSIFIED",
        ModOar => "MOD-OAR",
        ModReirradiation => "MOD-REIRRADIATION",
        ModSolitaryKidney => "MOD-SOLITARY-KIDNEY",
        ModGradeUnknown => "MOD-GRADE-UNKNOWN",
        RxSchedule => "RX-SCHEDULE",
        AlertHypofractionation => "ALERT-HYPOFRACTIONATION",
        AlertPreopWound => "ALERT-PREOP-WOUND",
        Window => "WINDOW",
        WindowOverdue => "WINDOW-OVERDUE",
        VolPostop => "VOL-POSTOP",
        VolHematoma => "VOL-HEMATOMA",
        VolPreop => "VOL-PREOP",
        OarConstraints => "OAR-CONSTRAINTS",
        OarUnverified => "OAR-UNVERIFIED",
        AlertNoOarConstraints => "ALERT-NO-OAR-CONSTRAINTS",
        AlertReferenceCenter => "ALERT-REFERENCE-CENTER",
        AlertChylousLeak => "ALERT-CHYLOUS-LEAK",
        OutcomeLocalControl => "OUTCOME-LOCAL-CONTROL",
        OutcomeRpsEvidence => "OUTCOME-RPS-EVIDENCE",
        OutcomeIvcLigation => "OUTCOME-IVC-LIGATION",
        OutcomeIvcRenal => "OUTCOME-IVC-RENAL",
    }
}

id_enum! {
    /// An alert code of clinical spec §9.
    AlertCode {
        OutOfScopeMetastatic => "OUT_OF_SCOPE_METASTATIC",
        Reirradiation => "REIRRADIATION",
        SolitaryKidney => "SOLITARY_KIDNEY",
        RpsPostopRtNotRecommended => "RPS_POSTOP_RT_NOT_RECOMMENDED",
        RtStartOverdue => "RT_START_OVERDUE",
        RpsRtNotStandard => "RPS_RT_NOT_STANDARD",
        SiteUnclassified => "SITE_UNCLASSIFIED",
        OarDoseModification => "OAR_DOSE_MODIFICATION",
        ReExcisionFirst => "RE_EXCISION_FIRST",
        GrossResidualDisease => "GROSS_RESIDUAL_DISEASE",
        GradeUnknown => "GRADE_UNKNOWN",
        ChemoradiationInvestigational => "CHEMORADIATION_INVESTIGATIONAL",
        HematomaDoNotDelay => "HEMATOMA_DO_NOT_DELAY",
        ChylousLeakRisk => "CHYLOUS_LEAK_RISK",
        ChemoradiationOption => "CHEMORADIATION_OPTION",
        ReferenceCenterSurgery => "REFERENCE_CENTER_SURGERY",
        CompartmentalNoRt => "COMPARTMENTAL_NO_RT",
        PreopWoundComplications => "PREOP_WOUND_COMPLICATIONS",
        HypofractionationLimitedEvidence => "HYPOFRACTIONATION_LIMITED_EVIDENCE",
        PostopBoostNotRoutine => "POSTOP_BOOST_NOT_ROUTINE",
        NoOarConstraints => "NO_OAR_CONSTRAINTS",
        PreopRtComplete => "PREOP_RT_COMPLETE",
        OarLimitNotVerified => "OAR_LIMIT_NOT_VERIFIED",
    }
}

id_enum! {
    /// A target-volume code of clinical spec §7.
    VolumeCode {
        GrossTumor => "GROSS_TUMOR",
        SurgicalBed => "SURGICAL_BED",
        VascularReconstructionSite => "VASCULAR_RECONSTRUCTION_SITE",
        Hematoma => "HEMATOMA",
    }
}

id_enum! {
    /// A finding code of the prescription check, clinical spec §12.
    FindingCode {
        NotIndicated => "RX_NOT_INDICATED",
        SettingMismatch => "RX_SETTING_MISMATCH",
        Reirradiation => "RX_REIRRADIATION",
        Schedule => "RX_SCHEDULE",
        Dose => "RX_DOSE",
        AfterPreopRt => "RX_AFTER_PREOP_RT",
        FractionSize => "RX_FRACTION_SIZE",
        Boost => "RX_BOOST",
        StartDate => "RX_START_DATE",
        Oar => "RX_OAR",
    }
}

id_enum! {
    /// Alert severity.
    Severity {
        Info => "INFO",
        Warning => "WARNING",
        Critical => "CRITICAL",
    }
}

id_enum! {
    /// Prescription-check verdict, ordered from best to worst.
    Verdict {
        Pass => "PASS",
        Review => "REVIEW",
        Fail => "FAIL",
    }
}
