//! Whether a model's parameters are all finite: checked before a checkpoint is written, so a
//! run that overflowed stops at its last finite checkpoint instead of saving the overflow.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

/// The first parameter (by module path) holding non-finite values, and how many values of
/// the whole module are non-finite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFinite {
    pub first: String,
    pub values: u64,
}

/// `None` when every parameter value of `module` is finite.
pub fn non_finite<B: Backend, M: Module<B>>(module: &M) -> Option<NonFinite> {
    let mut visitor = Count { path: Vec::new(), first: None, values: 0 };
    module.visit(&mut visitor);
    visitor.first.map(|first| NonFinite { first, values: visitor.values })
}

struct Count {
    path: Vec<String>,
    first: Option<String>,
    values: u64,
}

impl<B: Backend> ModuleVisitor<B> for Count {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let bad: u64 = param.val().is_finite().bool_not().int().sum().into_scalar().elem::<i64>() as u64;
        if bad > 0 {
            self.values += bad;
            self.first.get_or_insert_with(|| self.path.join("."));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    use super::*;

    type B = NdArray<f32>;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        first: Linear<B>,
        second: Linear<B>,
    }

    #[test]
    fn non_finite_values_are_counted_and_the_first_parameter_named() {
        let device = Default::default();
        let mut model =
            Two::<B> { first: LinearConfig::new(3, 2).init(&device), second: LinearConfig::new(2, 2).init(&device) };
        assert_eq!(non_finite(&model), None);
        let weight = TensorData::new(vec![1.0f32, f32::NAN, f32::INFINITY, 0.0], [2, 2]);
        model.second.weight = Param::from_tensor(Tensor::from_data(weight, &device));
        let found = non_finite(&model).unwrap();
        assert_eq!(found.values, 2);
        assert!(found.first.contains("second"), "{found:?}");
    }
}
