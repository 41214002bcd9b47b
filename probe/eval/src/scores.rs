//! The numbers a report gives, as polars lazy queries over a predictions frame with
//! columns `encoder`, `checkpoint` (where the encoder came from), `probe`, `protocol`,
//! `fold` (null unless the protocol has folds), `id`, `label`, `predicted`.
//!
//! Macro F1 averages the per-class F1 over every class that occurs as a label or as a
//! prediction (scikit-learn's `f1_score(average="macro")`); per-class accuracy is recall.

use polars::prelude::*;

/// Columns that identify one evaluation.
pub const TASK_KEYS: [&str; 5] = ["encoder", "checkpoint", "probe", "protocol", "fold"];
/// Columns that identify one reported number (folds are averaged).
pub const SUMMARY_KEYS: [&str; 4] = ["encoder", "checkpoint", "probe", "protocol"];

fn keys<const N: usize>(names: [&str; N]) -> Vec<Expr> {
    names.iter().map(|name| col(*name)).collect()
}

/// `(task keys, label, predicted, count)`, one row per non-empty cell.
pub fn confusion(predictions: LazyFrame) -> LazyFrame {
    let mut by = keys(TASK_KEYS);
    by.extend([col("label"), col("predicted")]);
    predictions
        .group_by(by)
        .agg([len().cast(DataType::Int64).alias("count")])
        .sort(["encoder", "probe", "protocol", "fold", "label", "predicted"], SortMultipleOptions::default())
}

/// Per task and class: `support`, `predicted_count`, `true_positives`, `precision`,
/// `recall` (= per-class accuracy), `f1`.
pub fn per_class(predictions: LazyFrame) -> LazyFrame {
    // Each prediction counts once for its label's class and once for its predicted class.
    let as_label = predictions.clone().select(
        keys(TASK_KEYS)
            .into_iter()
            .chain([
                col("label").alias("class"),
                lit(1i64).cast(DataType::Int64).alias("support"),
                col("label").eq(col("predicted")).cast(DataType::Int64).alias("true_positives"),
                lit(0i64).cast(DataType::Int64).alias("predicted_count"),
            ])
            .collect::<Vec<_>>(),
    );
    let as_prediction = predictions.select(
        keys(TASK_KEYS)
            .into_iter()
            .chain([
                col("predicted").alias("class"),
                lit(0i64).cast(DataType::Int64).alias("support"),
                lit(0i64).cast(DataType::Int64).alias("true_positives"),
                lit(1i64).cast(DataType::Int64).alias("predicted_count"),
            ])
            .collect::<Vec<_>>(),
    );
    let mut by = keys(TASK_KEYS);
    by.push(col("class"));
    let ratio = |numerator: &str, denominator: &str| {
        when(col(denominator).gt(lit(0)))
            .then(col(numerator).cast(DataType::Float64) / col(denominator).cast(DataType::Float64))
            .otherwise(lit(0.0))
    };
    concat([as_label, as_prediction], UnionArgs::default())
        .expect("both halves have one schema")
        .group_by(by)
        .agg([col("support").sum(), col("predicted_count").sum(), col("true_positives").sum()])
        .with_columns([
            ratio("true_positives", "predicted_count").alias("precision"),
            ratio("true_positives", "support").alias("recall"),
        ])
        .with_column(
            when((col("precision") + col("recall")).gt(lit(0.0)))
                .then(lit(2.0) * col("precision") * col("recall") / (col("precision") + col("recall")))
                .otherwise(lit(0.0))
                .alias("f1"),
        )
        .sort(["encoder", "probe", "protocol", "fold", "class"], SortMultipleOptions::default())
}

/// Per task: `rows`, `accuracy`, `macro_f1`.
pub fn per_task(predictions: LazyFrame) -> LazyFrame {
    per_class(predictions)
        .group_by(keys(TASK_KEYS))
        .agg([
            col("support").sum().alias("rows"),
            (col("true_positives").sum().cast(DataType::Float64) / col("support").sum().cast(DataType::Float64))
                .alias("accuracy"),
            col("f1").mean().alias("macro_f1"),
        ])
        .sort(["encoder", "probe", "protocol", "fold"], SortMultipleOptions::default())
}

/// Per (encoder, checkpoint, probe, protocol): mean `accuracy` and `macro_f1` over folds, their
/// sample standard deviations (null with one fold), and `folds`.
pub fn summary(predictions: LazyFrame) -> LazyFrame {
    per_task(predictions)
        .group_by(keys(SUMMARY_KEYS))
        .agg([
            col("accuracy").mean(),
            col("macro_f1").mean(),
            col("accuracy").std(1).alias("accuracy_std"),
            col("macro_f1").std(1).alias("macro_f1_std"),
            len().cast(DataType::Int32).alias("folds"),
        ])
        .sort(["protocol", "probe", "encoder"], SortMultipleOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heldout::{Predictions, TaskLabel, predictions_frame};

    fn frame(labels: &[i32], predicted: &[i32], fold: Option<u32>) -> (TaskLabel, Predictions) {
        let task = TaskLabel {
            encoder: "pretrained".into(),
            checkpoint: "step-00000010".into(),
            probe: "linear".into(),
            protocol: "toy".into(),
            fold,
        };
        let ids = (0..labels.len() as u64).collect();
        (task, Predictions { ids, labels: labels.to_vec(), predicted: predicted.to_vec() })
    }

    fn column_f64(frame: &DataFrame, name: &str) -> Vec<f64> {
        frame.column(name).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect()
    }

    #[test]
    fn accuracy_and_macro_f1_match_a_hand_computed_confusion_matrix() {
        // Confusion matrix (rows = label, columns = predicted):
        //          0  1  2
        //   0    [ 3  1  0 ]
        //   1    [ 1  2  1 ]
        //   2    [ 0  0  2 ]
        // accuracy = 7 / 10.
        // class 0: P = 3/4, R = 3/4, F1 = 3/4
        // class 1: P = 2/3, R = 2/4, F1 = 2·(2/3)(1/2)/(2/3 + 1/2) = 4/7
        // class 2: P = 2/3, R = 2/2, F1 = 2·(2/3)(1)/(2/3 + 1) = 4/5
        // macro F1 = (3/4 + 4/7 + 4/5) / 3
        let labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2];
        let predicted = [0, 0, 0, 1, 0, 1, 1, 2, 2, 2];
        let df = predictions_frame(&[frame(&labels, &predicted, None)]).unwrap();
        let task = per_task(df.clone().lazy()).collect().unwrap();
        assert_eq!(task.height(), 1);
        assert!((column_f64(&task, "accuracy")[0] - 0.7).abs() < 1e-12);
        let expected_f1 = (3.0 / 4.0 + 4.0 / 7.0 + 4.0 / 5.0) / 3.0;
        assert!((column_f64(&task, "macro_f1")[0] - expected_f1).abs() < 1e-12, "{task}");

        let classes = per_class(df.clone().lazy()).collect().unwrap();
        assert_eq!(column_f64(&classes, "recall"), vec![0.75, 0.5, 1.0]);
        assert_eq!(column_f64(&classes, "support"), vec![4.0, 4.0, 2.0]);

        let cells = confusion(df.lazy()).collect().unwrap();
        let counts = column_f64(&cells, "count");
        assert_eq!(counts, vec![3.0, 1.0, 1.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn a_class_only_ever_predicted_counts_in_macro_f1() {
        // Labels are all class 0; half are predicted as class 1, which never occurs as a
        // label. F1(0) = 2·1·0.5/1.5 = 2/3, F1(1) = 0 → macro F1 = 1/3.
        let df = predictions_frame(&[frame(&[0, 0, 0, 0], &[0, 0, 1, 1], None)]).unwrap();
        let task = per_task(df.lazy()).collect().unwrap();
        assert!((column_f64(&task, "macro_f1")[0] - 1.0 / 3.0).abs() < 1e-12);
        assert!((column_f64(&task, "accuracy")[0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn folds_are_averaged_with_their_standard_deviation() {
        // Fold 0: 4 of 4 right; fold 1: 2 of 4 → mean 0.75, sample std √((0.25² + 0.25²) / 1).
        let df = predictions_frame(&[
            frame(&[0, 1, 0, 1], &[0, 1, 0, 1], Some(0)),
            frame(&[0, 1, 0, 1], &[0, 0, 0, 0], Some(1)),
        ])
        .unwrap();
        let summary = summary(df.lazy()).collect().unwrap();
        assert_eq!(summary.height(), 1);
        assert!((column_f64(&summary, "accuracy")[0] - 0.75).abs() < 1e-12);
        assert!((column_f64(&summary, "accuracy_std")[0] - (0.125f64).sqrt()).abs() < 1e-12);
        assert_eq!(column_f64(&summary, "folds"), vec![2.0]);
    }
}
