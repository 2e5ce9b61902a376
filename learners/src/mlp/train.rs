//! Training with burn. Randomness (initial weights, batch order, dropout masks) comes from our
//! own seeded RNG rather than burn's: the flex backend's RNG is one process-wide generator, so
//! two trials training at once would otherwise draw from each other's stream.

use std::sync::OnceLock;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::{log_sigmoid, log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};
use ndarray::Array2;
use quarry_featurize::{FeatureMatrix, Target, Task};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Dense, MlpModel, MlpParams, loss};
use crate::design::{design, fit_prep};
use crate::error::{Result, TrainError};
use crate::family::RoundCallback;

/// Without a validation set, this share of the training rows is held out for early stopping.
const HOLDOUT_SHARE: f64 = 0.1;
/// Training sets smaller than this train every epoch on all rows instead.
const MIN_HOLDOUT_ROWS: usize = 100;

#[derive(Module, Debug)]
struct Net {
    layers: Vec<Linear>,
}

impl Net {
    fn forward(&self, x: Tensor<2>, masks: &[Tensor<2>]) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = relu(h);
                if let Some(m) = masks.get(i) {
                    h = h * m.clone();
                }
            }
        }
        h
    }
}

fn fit_err(message: impl Into<String>) -> TrainError {
    TrainError::Fit { family: "mlp".into(), message: message.into() }
}

/// The device MLP trials train on: a GPU through wgpu when built with the `gpu` feature and
/// one answers (unless `QUARRY_MLP_DEVICE=cpu`), else burn's flex CPU backend.
fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let want_cpu = std::env::var("QUARRY_MLP_DEVICE").is_ok_and(|v| v.eq_ignore_ascii_case("cpu"));
        if !want_cpu && let Some(gpu) = gpu_device() {
            tracing::info!("mlp trains on the GPU (wgpu)");
            return gpu;
        }
        Device::flex()
    })
}

/// "gpu" or "cpu": where MLP fits in this process run.
pub fn device_name() -> &'static str {
    if device().is_cpu_flex() { "cpu" } else { "gpu" }
}

trait IsFlex {
    fn is_cpu_flex(&self) -> bool;
}

impl IsFlex for Device {
    fn is_cpu_flex(&self) -> bool {
        *self == Device::flex()
    }
}

#[cfg(feature = "gpu")]
fn gpu_device() -> Option<Device> {
    use burn::tensor::DeviceKind;
    // wgpu panics when no adapter exists; a tiny read-back proves the device works. Only real
    // GPUs count: a software (CPU) adapter would be far slower than flex.
    let probe = || {
        let d = Device::wgpu(DeviceKind::DiscreteGpu(0));
        let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &d);
        let v = (t.clone() + t).try_into_data().ok()?.try_to_vec::<f32>().ok()?;
        (v == [2.0, 4.0]).then_some(d)
    };
    // The probe's panics (on burn's device thread too) are the expected answer on a machine
    // without a GPU: log them quietly instead of printing panic messages and backtraces.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| tracing::debug!("mlp: GPU probe: {info}")));
    let found = std::panic::catch_unwind(probe);
    std::panic::set_hook(hook);
    match found {
        Ok(d) => d,
        Err(_) => {
            tracing::info!("mlp: no usable GPU adapter; training on the CPU");
            None
        }
    }
}

#[cfg(not(feature = "gpu"))]
fn gpu_device() -> Option<Device> {
    None
}

/// Rows of the design matrix (`f32`, row-major) with their targets in training form:
/// class code, 0/1, or the standardised value.
struct Rows {
    x: Vec<f32>,
    y: Vec<f32>,
    n: usize,
}

pub fn fit(
    x: &FeatureMatrix,
    y: &Target,
    task: Task,
    valid: Option<(&FeatureMatrix, &Target)>,
    params: &MlpParams,
    seed: u64,
    on_round: RoundCallback<'_>,
) -> Result<MlpModel> {
    params.check()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Early stopping needs held-out rows; without a validation set, take some (seeded).
    let holdout = (valid.is_none() && params.patience > 0 && x.n_rows >= MIN_HOLDOUT_ROWS).then(|| {
        let mut idx: Vec<usize> = (0..x.n_rows).collect();
        idx.shuffle(&mut rng);
        let n_hold = ((x.n_rows as f64) * HOLDOUT_SHARE).round() as usize;
        let (hold, train) = idx.split_at(n_hold);
        let (mut hold, mut train) = (hold.to_vec(), train.to_vec());
        hold.sort_unstable();
        train.sort_unstable();
        (x.select_rows(&train), y.select_rows(&train), x.select_rows(&hold), y.select_rows(&hold))
    });
    let (x, y, valid) = match &holdout {
        Some((xt, yt, xv, yv)) => (xt, yt, Some((xv, yv))),
        None => (x, y, valid),
    };

    let (n_classes, n_out) = match (task, y) {
        (Task::Regression, Target::Values(_)) => (0, 1),
        (Task::Binary, Target::Classes { classes, .. }) if classes.len() == 2 => (2, 1),
        (Task::Multiclass, Target::Classes { classes, .. }) if classes.len() >= 2 => {
            (classes.len(), classes.len())
        }
        _ => return Err(TrainError::Data(format!("mlp: a {task:?} task needs a matching target"))),
    };
    let (target_mean, target_std) = match y {
        Target::Values(v) => {
            if v.iter().any(|t| !t.is_finite()) {
                return Err(TrainError::Data("mlp: non-finite target value".into()));
            }
            let n = v.len().max(1) as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n;
            (mean, if var > 1e-24 { var.sqrt() } else { 1.0 })
        }
        Target::Classes { .. } => (0.0, 1.0),
    };
    let prep = fit_prep(x);
    let d = design(&prep, x);
    let width = d.ncols();
    let rows = Rows {
        x: d.iter().map(|&v| v as f32).collect(),
        y: match y {
            Target::Values(v) => v.iter().map(|t| ((t - target_mean) / target_std) as f32).collect(),
            Target::Classes { codes, .. } => codes.iter().map(|&c| c as f32).collect(),
        },
        n: x.n_rows,
    };
    let valid_design: Option<(Array2<f64>, &Target)> = valid.map(|(vx, vy)| (design(&prep, vx), vy));

    let mut sizes = vec![width];
    sizes.extend(std::iter::repeat_n(params.hidden, params.hidden_layers));
    sizes.push(n_out);
    let mut model = MlpModel {
        prep,
        layers: init_layers(&sizes, &mut rng),
        task,
        n_classes,
        target_mean,
        target_std,
        best_epoch: 0,
    };

    let dev = device().clone().autodiff();
    let mut net = Net { layers: model.layers.iter().map(|l| to_linear(l, &dev)).collect() };
    let mut optim = AdamWConfig::new().with_weight_decay(params.weight_decay as f32).init();
    let mut order: Vec<usize> = (0..rows.n).collect();
    let mut best: Option<(f64, Vec<Dense>)> = None;
    let mut since_best = 0;
    for epoch in 0..params.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(params.batch_size) {
            let loss = batch_loss(&net, &rows, batch, width, n_out, task, params, &mut rng, &dev);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(params.learning_rate, net, grads);
        }
        model.layers = from_net(&net)?;
        model.best_epoch = epoch + 1;
        let Some((vd, vy)) = &valid_design else {
            if !on_round(epoch, f64::NAN) {
                break;
            }
            continue;
        };
        let vloss = loss(&model.predict_design(vd.clone()), vy);
        if !vloss.is_finite() {
            return Err(fit_err(format!("validation loss is {vloss} after epoch {}", epoch + 1)));
        }
        tracing::trace!(epoch, vloss, "mlp epoch");
        if best.as_ref().is_none_or(|(b, _)| vloss < *b) {
            best = Some((vloss, model.layers.clone()));
            model.best_epoch = epoch + 1;
            since_best = 0;
        } else {
            since_best += 1;
        }
        let keep_going = on_round(epoch, vloss);
        if !keep_going || (params.patience > 0 && since_best >= params.patience) {
            break;
        }
    }
    if let Some((_, layers)) = best {
        model.best_epoch -= since_best;
        model.layers = layers;
    }
    Ok(model)
}

/// He-uniform weights for the ReLU layers, zero biases.
fn init_layers(sizes: &[usize], rng: &mut ChaCha8Rng) -> Vec<Dense> {
    sizes
        .windows(2)
        .map(|w| {
            let (n_in, n_out) = (w[0], w[1]);
            let bound = (6.0 / n_in.max(1) as f64).sqrt() as f32;
            let weight = (0..n_in * n_out).map(|_| rng.random_range(-bound..=bound)).collect();
            Dense { n_in, n_out, weight, bias: vec![0.0; n_out] }
        })
        .collect()
}

fn to_linear(l: &Dense, dev: &Device) -> Linear {
    let w = Tensor::<2>::from_data(TensorData::new(l.weight.clone(), [l.n_in, l.n_out]), dev);
    let b = Tensor::<1>::from_data(TensorData::new(l.bias.clone(), [l.n_out]), dev);
    Linear { weight: Param::from_tensor(w), bias: Some(Param::from_tensor(b)) }
}

fn read(t: Tensor<1>) -> Result<Vec<f32>> {
    let data = t.try_into_data().map_err(|e| fit_err(format!("reading weights: {e:?}")))?;
    data.try_to_vec::<f32>().map_err(|e| fit_err(format!("reading weights: {e:?}")))
}

fn from_net(net: &Net) -> Result<Vec<Dense>> {
    net.layers
        .iter()
        .map(|l| {
            let [n_in, n_out] = l.weight.val().dims();
            let weight = read(l.weight.val().reshape([n_in * n_out]))?;
            let bias = match &l.bias {
                Some(b) => read(b.val())?,
                None => vec![0.0; n_out],
            };
            Ok(Dense { n_in, n_out, weight, bias })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn batch_loss(
    net: &Net,
    rows: &Rows,
    batch: &[usize],
    width: usize,
    n_out: usize,
    task: Task,
    params: &MlpParams,
    rng: &mut ChaCha8Rng,
    dev: &Device,
) -> Tensor<1> {
    let b = batch.len();
    let mut xb = Vec::with_capacity(b * width);
    for &r in batch {
        xb.extend_from_slice(&rows.x[r * width..(r + 1) * width]);
    }
    let xt = Tensor::<2>::from_data(TensorData::new(xb, [b, width]), dev);
    let masks: Vec<Tensor<2>> = if params.dropout > 0.0 {
        let keep = 1.0 - params.dropout;
        let scale = (1.0 / keep) as f32;
        (0..params.hidden_layers)
            .map(|_| {
                let m: Vec<f32> =
                    (0..b * params.hidden).map(|_| if rng.random_bool(keep) { scale } else { 0.0 }).collect();
                Tensor::<2>::from_data(TensorData::new(m, [b, params.hidden]), dev)
            })
            .collect()
    } else {
        Vec::new()
    };
    let out = net.forward(xt, &masks);
    let targets: Vec<f32> = batch.iter().map(|&r| rows.y[r]).collect();
    match task {
        Task::Regression => {
            let yt = Tensor::<2>::from_data(TensorData::new(targets, [b, 1]), dev);
            let diff = out - yt;
            (diff.clone() * diff).mean()
        }
        Task::Binary => {
            // Binary cross-entropy on logits: -(y log σ(z) + (1 - y) log σ(-z)).
            let yt = Tensor::<2>::from_data(TensorData::new(targets, [b, 1]), dev);
            let pos = log_sigmoid(out.clone()) * yt.clone();
            let neg = log_sigmoid(out.neg()) * (yt.neg() + 1.0);
            (pos + neg).mean().neg()
        }
        Task::Multiclass => {
            let mut onehot = vec![0.0f32; b * n_out];
            for (i, &c) in targets.iter().enumerate() {
                if let Some(v) = onehot.get_mut(i * n_out + c as usize) {
                    *v = 1.0;
                }
            }
            let yt = Tensor::<2>::from_data(TensorData::new(onehot, [b, n_out]), dev);
            (log_softmax(out, 1) * yt).sum_dim(1).mean().neg()
        }
    }
}
