//! Contract lint beyond buf, over the compiled descriptor set: dose fields end in `_gy`, date fields
//! are strings documented `YYYY-MM-DD`, every enum's zero value is `_UNSPECIFIED`, and every
//! message, field, enum, enum value, service and method of `vlms.rt.v1` has a leading comment.

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet, SourceCodeInfo};

/// The files of `vlms.rt.v1`, each with its source info (its comments).
fn contract_files() -> Vec<(FileDescriptorProto, SourceCodeInfo)> {
    let set = FileDescriptorSet::decode(vlms_rt::pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let files: Vec<(FileDescriptorProto, SourceCodeInfo)> = set
        .file
        .into_iter()
        .filter(|file| file.package() == "vlms.rt.v1")
        .map(|file| {
            let info = file
                .source_code_info
                .clone()
                .expect("source info is compiled in");
            (file, info)
        })
        .collect();
    assert_eq!(
        files.len(),
        3,
        "case.proto, plan.proto, recommendation_service.proto"
    );
    files
}

fn leading_comment<'a>(info: &'a SourceCodeInfo, path: &[i32]) -> Option<&'a str> {
    info.location
        .iter()
        .find(|location| location.path == path)
        .and_then(|location| location.leading_comments.as_deref())
        .filter(|comment| !comment.trim().is_empty())
}

/// Calls `visit(message, path)` for every message, nested ones included.
fn messages<'a>(
    file: &'a FileDescriptorProto,
    visit: &mut dyn FnMut(&'a DescriptorProto, Vec<i32>),
) {
    fn walk<'a>(
        message: &'a DescriptorProto,
        path: Vec<i32>,
        visit: &mut dyn FnMut(&'a DescriptorProto, Vec<i32>),
    ) {
        visit(message, path.clone());
        for (index, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([3, i32::try_from(index).expect("index")]);
            walk(nested, nested_path, visit);
        }
    }
    for (index, message) in file.message_type.iter().enumerate() {
        walk(
            message,
            vec![4, i32::try_from(index).expect("index")],
            visit,
        );
    }
}

#[test]
fn doses_dates_and_enum_zero_values_follow_the_conventions() {
    let mut problems = Vec::new();
    for (file, info) in contract_files() {
        messages(&file, &mut |message, path| {
            for (index, field) in message.field.iter().enumerate() {
                let name = field.name();
                let qualified = format!("{}.{}", message.name(), name);
                let mut field_path = path.clone();
                field_path.extend([2, i32::try_from(index).expect("index")]);
                let comment = leading_comment(&info, &field_path).unwrap_or_default();
                let is_double = field.r#type() == Type::Double;
                let dose_like = is_double
                    && (name.contains("dose")
                        || name.contains("eqd2")
                        || name.contains("alpha_beta"));
                if dose_like && !name.ends_with("_gy") {
                    problems.push(format!("{qualified}: a dose field must end in _gy"));
                }
                if is_double
                    && !(name.ends_with("_gy")
                        || name.ends_with("_cm")
                        || matches!(
                            qualified.as_str(),
                            "OrganConstraint.limit" | "DoseMetric.value"
                        ))
                {
                    problems.push(format!(
                        "{qualified}: a double must name its unit (_gy, _cm) or be a metric value"
                    ));
                }
                let date_like = name.ends_with("_date")
                    || matches!(
                        qualified.as_str(),
                        "StartWindow.earliest" | "StartWindow.latest"
                    );
                if date_like && (field.r#type() != Type::String || !comment.contains("YYYY-MM-DD"))
                {
                    problems.push(format!(
                        "{qualified}: a date must be a string documented YYYY-MM-DD"
                    ));
                }
            }
        });
        for enumeration in &file.enum_type {
            let zero = enumeration
                .value
                .iter()
                .find(|value| value.number() == 0)
                .map(|value| value.name().to_string());
            let prefix = screaming_snake(enumeration.name());
            if zero.as_deref() != Some(&format!("{prefix}_UNSPECIFIED")) {
                problems.push(format!(
                    "{}: zero value is {zero:?}, not {prefix}_UNSPECIFIED",
                    enumeration.name()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn screaming_snake(name: &str) -> String {
    let mut out = String::new();
    for (index, character) in name.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(character.to_ascii_uppercase());
    }
    out
}

#[test]
fn every_element_of_the_contract_is_documented() {
    let mut problems = Vec::new();
    for (file, info) in contract_files() {
        let mut check = |path: Vec<i32>, what: String| {
            if leading_comment(&info, &path).is_none() {
                problems.push(format!("{}: {what} has no leading comment", file.name()));
            }
        };
        messages(&file, &mut |message, path| {
            check(path.clone(), format!("message {}", message.name()));
            for (index, field) in message.field.iter().enumerate() {
                let mut field_path = path.clone();
                field_path.extend([2, i32::try_from(index).expect("index")]);
                check(
                    field_path,
                    format!("field {}.{}", message.name(), field.name()),
                );
            }
        });
        for (index, enumeration) in file.enum_type.iter().enumerate() {
            let enum_index = i32::try_from(index).expect("index");
            check(vec![5, enum_index], format!("enum {}", enumeration.name()));
            for (value_index, value) in enumeration.value.iter().enumerate() {
                check(
                    vec![5, enum_index, 2, i32::try_from(value_index).expect("index")],
                    format!("enum value {}", value.name()),
                );
            }
        }
        for (index, service) in file.service.iter().enumerate() {
            let service_index = i32::try_from(index).expect("index");
            check(
                vec![6, service_index],
                format!("service {}", service.name()),
            );
            for (method_index, method) in service.method.iter().enumerate() {
                check(
                    vec![
                        6,
                        service_index,
                        2,
                        i32::try_from(method_index).expect("index"),
                    ],
                    format!("rpc {}", method.name()),
                );
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
