//! Enum numbers the contract does not define, carried from the JSON input to the request.
//!
//! Proto3 enums are open and proto3 JSON may give any enum as its number, but the generated JSON
//! reader (pbjson) refuses a number it has no name for. Judging a request is the service's job: it
//! answers such a number with a field violation at that field. So the client takes those numbers
//! out of the JSON before reading it (leaving 0 in their place) and puts them back into the message
//! after, and the request reaches the service as the caller wrote it.

use serde_json::Value;

use crate::pb;

/// Whether an enum defines a number.
type Defines = fn(i32) -> bool;

/// Whether the enum `E` defines `number`.
fn defined<E: TryFrom<i32>>(number: i32) -> bool {
    E::try_from(number).is_ok()
}

/// Takes the number out of `object[name]` (either JSON spelling) when it is an int32 the enum does
/// not define, leaving 0 there.
fn take(object: &mut Value, names: [&str; 2], defines: Defines) -> Option<i32> {
    take_value(member(object, names)?, defines)
}

fn take_value(slot: &mut Value, defines: Defines) -> Option<i32> {
    let number = i32::try_from(slot.as_i64()?).ok()?;
    if defines(number) {
        return None;
    }
    *slot = Value::from(0);
    Some(number)
}

/// Takes undefined numbers out of every element of the array `object[name]`, by index.
fn take_each(object: &mut Value, names: [&str; 2], defines: Defines) -> Vec<(usize, i32)> {
    let Some(Value::Array(items)) = member(object, names) else {
        return Vec::new();
    };
    items
        .iter_mut()
        .enumerate()
        .filter_map(|(index, item)| take_value(item, defines).map(|number| (index, number)))
        .collect()
}

/// `object[name]`, under either JSON spelling of the field's name.
fn member<'a>(object: &'a mut Value, names: [&str; 2]) -> Option<&'a mut Value> {
    let map = object.as_object_mut()?;
    let key = names.into_iter().find(|name| map.contains_key(*name))?;
    map.get_mut(key)
}

/// The undefined enum numbers of a `Case`.
#[derive(Debug, Default, PartialEq)]
pub struct CaseEnums {
    vessel: Option<i32>,
    ivc_segment: Option<i32>,
    grade: Option<i32>,
    depth: Option<i32>,
    phase: Option<i32>,
    resectability: Option<i32>,
    margin: Option<i32>,
    vascular_management: Option<i32>,
    organs_at_risk: Vec<(usize, i32)>,
}

impl CaseEnums {
    /// Takes them out of the JSON of a `Case`.
    pub fn take(case: &mut Value) -> CaseEnums {
        let mut taken = CaseEnums {
            vessel: take(case, ["vessel", "vessel"], defined::<pb::Vessel>),
            ivc_segment: take(
                case,
                ["ivcSegment", "ivc_segment"],
                defined::<pb::IvcSegment>,
            ),
            phase: take(case, ["phase", "phase"], defined::<pb::TreatmentPhase>),
            resectability: take(
                case,
                ["resectability", "resectability"],
                defined::<pb::Resectability>,
            ),
            organs_at_risk: take_each(
                case,
                ["organsAtRisk", "organs_at_risk"],
                defined::<pb::Organ>,
            ),
            ..CaseEnums::default()
        };
        if let Some(tumor) = member(case, ["tumor", "tumor"]) {
            taken.grade = take(tumor, ["grade", "grade"], defined::<pb::Grade>);
            taken.depth = take(tumor, ["depth", "depth"], defined::<pb::Depth>);
        }
        if let Some(resection) = member(case, ["resection", "resection"]) {
            taken.margin = take(resection, ["margin", "margin"], defined::<pb::Margin>);
            taken.vascular_management = take(
                resection,
                ["vascularManagement", "vascular_management"],
                defined::<pb::VascularManagement>,
            );
        }
        taken
    }

    /// Puts them back into the `Case` read from that JSON.
    pub fn put_back(self, case: &mut pb::Case) {
        let set = |field: &mut i32, number: Option<i32>| {
            if let Some(number) = number {
                *field = number;
            }
        };
        set(&mut case.vessel, self.vessel);
        set(&mut case.ivc_segment, self.ivc_segment);
        set(&mut case.phase, self.phase);
        set(&mut case.resectability, self.resectability);
        if let Some(tumor) = case.tumor.as_mut() {
            set(&mut tumor.grade, self.grade);
            set(&mut tumor.depth, self.depth);
        }
        if let Some(resection) = case.resection.as_mut() {
            set(&mut resection.margin, self.margin);
            set(&mut resection.vascular_management, self.vascular_management);
        }
        for (index, number) in self.organs_at_risk {
            if let Some(organ) = case.organs_at_risk.get_mut(index) {
                *organ = number;
            }
        }
    }
}

/// The undefined enum numbers of a `CheckPrescriptionRequest`.
#[derive(Debug, Default, PartialEq)]
pub struct CheckEnums {
    case: Option<CaseEnums>,
    setting: Option<i32>,
    phase_kinds: Vec<(usize, i32)>,
}

impl CheckEnums {
    /// Takes them out of the JSON of a `CheckPrescriptionRequest`.
    pub fn take(request: &mut Value) -> CheckEnums {
        let mut taken = CheckEnums {
            case: member(request, ["case", "case"]).map(CaseEnums::take),
            setting: take(request, ["setting", "setting"], defined::<pb::Setting>),
            phase_kinds: Vec::new(),
        };
        if let Some(Value::Array(phases)) = member(request, ["phases", "phases"]) {
            for (index, phase) in phases.iter_mut().enumerate() {
                if let Some(number) = take(phase, ["kind", "kind"], defined::<pb::PhaseKind>) {
                    taken.phase_kinds.push((index, number));
                }
            }
        }
        taken
    }

    /// Puts them back into the request read from that JSON.
    pub fn put_back(self, request: &mut pb::CheckPrescriptionRequest) {
        if let (Some(enums), Some(case)) = (self.case, request.case.as_mut()) {
            enums.put_back(case);
        }
        if let Some(setting) = self.setting {
            request.setting = setting;
        }
        for (index, number) in self.phase_kinds {
            if let Some(phase) = request.phases.get_mut(index) {
                phase.kind = number;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_numbers_reach_the_case_and_defined_ones_are_left_to_the_reader() {
        let mut json = serde_json::json!({
            "vessel": 99,
            "ivc_segment": 7,
            "tumor": {"sizeCm": 3.0, "grade": -4, "depth": 2},
            "phase": "TREATMENT_PHASE_POST_RESECTION",
            "resection": {"margin": 9, "vascularManagement": 3, "surgeryDate": "2026-01-01"},
            "organsAtRisk": ["ORGAN_LIVER", 42, 3, 2147483647]
        });
        let taken = CaseEnums::take(&mut json);
        let mut case: pb::Case = serde_json::from_value(json).expect("reads once taken out");
        taken.put_back(&mut case);
        assert_eq!(case.vessel, 99);
        assert_eq!(case.ivc_segment, 7);
        let tumor = case.tumor.expect("tumor");
        assert_eq!((tumor.grade, tumor.depth), (-4, 2));
        assert_eq!(case.phase, pb::TreatmentPhase::PostResection as i32);
        let resection = case.resection.expect("resection");
        assert_eq!((resection.margin, resection.vascular_management), (9, 3));
        assert_eq!(
            case.organs_at_risk,
            vec![pb::Organ::Liver as i32, 42, 3, 2_147_483_647]
        );
    }

    #[test]
    fn check_requests_keep_undefined_setting_and_phase_kinds() {
        let mut json = serde_json::json!({
            "case": {"vessel": 12, "tumor": {"grade": 5}},
            "setting": 8,
            "phases": [{"kind": 1, "fractions": 25}, {"kind": 6}]
        });
        let taken = CheckEnums::take(&mut json);
        let mut request: pb::CheckPrescriptionRequest =
            serde_json::from_value(json).expect("reads once taken out");
        taken.put_back(&mut request);
        let case = request.case.expect("case");
        assert_eq!(case.vessel, 12);
        assert_eq!(case.tumor.expect("tumor").grade, 5);
        assert_eq!(request.setting, 8);
        assert_eq!(
            request.phases.iter().map(|p| p.kind).collect::<Vec<_>>(),
            vec![1, 6]
        );
    }

    #[test]
    fn numbers_outside_int32_and_non_numbers_are_left_for_the_reader_to_refuse() {
        let mut json = serde_json::json!({"vessel": 4_294_967_296_i64, "phase": 1.5});
        let taken = CaseEnums::take(&mut json);
        assert_eq!(taken, CaseEnums::default());
        assert!(serde_json::from_value::<pb::Case>(json).is_err());
    }
}
