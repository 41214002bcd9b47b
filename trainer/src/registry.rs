//! The methods a run config can name, one line each. A new method is its own file (a
//! [`MethodSection`] and a [`Method`](crate::method::Method)) and one line in the list at the
//! bottom.

use std::collections::BTreeMap;

use burn::tensor::backend::AutodiffBackend;

use crate::method::{MethodInfo, MethodSection, MethodVisitor, SectionError};
use crate::vit::VitConfig;

macro_rules! methods {
    ($($variant:ident => $method:ty),+ $(,)?) => {
        /// The method a run trains, with its checked settings.
        #[derive(Debug, Clone)]
        pub enum AnyMethod {
            $($variant($method)),+
        }

        /// The name of every method, in the order they are listed.
        pub const METHOD_NAMES: &[&str] = &[$(<$method as MethodSection>::NAME),+];

        impl AnyMethod {
            /// Builds the method `name` from its section; `None` when no method has that name.
            fn build(name: &str, section: Option<&toml::Value>, encoder: &VitConfig) -> Option<Result<Self, SectionError>> {
                $(
                    if name == <$method as MethodSection>::NAME {
                        let built = <$method as MethodSection>::from_section(section, encoder);
                        return Some(built.map(AnyMethod::$variant).map_err(|error| in_section(error, name)));
                    }
                )+
                None
            }

            /// What the method is, whatever the backend.
            pub fn info(&self) -> &dyn MethodInfo {
                match self {
                    $(AnyMethod::$variant(method) => method),+
                }
            }

            /// Runs `visitor` with the method's own type.
            pub fn visit<B: AutodiffBackend, V: MethodVisitor<B>>(&self, visitor: V) -> V::Output {
                match self {
                    $(AnyMethod::$variant(method) => visitor.visit::<$method>(method)),+
                }
            }
        }
    };
}

impl AnyMethod {
    /// The method `name` of a run config, built from its section of `sections` and checked
    /// against `encoder`; every other method's section present is checked too, so a typo in
    /// a section the run does not use is still caught. An error names its field from the
    /// top of the run config (`ijepa.masks.num_targets`).
    pub fn from_config(
        name: &str,
        sections: &BTreeMap<String, toml::Value>,
        encoder: &VitConfig,
    ) -> Result<Self, SectionError> {
        for (other, section) in sections.iter().filter(|(other, _)| *other != name) {
            match Self::build(other, Some(section), encoder) {
                Some(Err(error)) => return Err(error),
                Some(Ok(_)) => {}
                None => {
                    return Err(SectionError::new(
                        other.clone(),
                        format!(
                            "is neither a run config section nor a method's; the methods are {}",
                            METHOD_NAMES.join(", ")
                        ),
                    ));
                }
            }
        }
        Self::build(name, sections.get(name), encoder).unwrap_or_else(|| {
            Err(SectionError::new("method", format!("is `{name}`, expected one of {}", METHOD_NAMES.join(", "))))
        })
    }
}

/// A section's error under the section's name.
fn in_section(error: SectionError, section: &str) -> SectionError {
    let field = if error.field.is_empty() { section.to_string() } else { format!("{section}.{}", error.field) };
    SectionError { field, problem: error.problem }
}

methods! {
    IJepa => crate::ijepa::IJepaMethod,
    IJepaPixels => crate::ijepa_pixels::IJepaPixelsMethod,
    Mae => crate::mae::MaeMethod,
}
