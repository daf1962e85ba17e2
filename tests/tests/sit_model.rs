//! SiT without golden files: parameter counts of the official configs, names and order, the
//! official initialisation, input and checkpoint errors, checkpoints with their latent
//! statistics, and the statistics themselves.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::model::sit::{timestep_embedding, LatentStats, Sit, SitConfig};
use gpstoken_core::model::{Init, WeightsError};
use gpstoken_tests::TestRng;

#[test]
fn official_parameter_counts_without_a_backend() {
    assert_eq!(SitConfig::sit_xl_gs().parameter_count().unwrap(), 676_334_634);
    assert_eq!(SitConfig::sit_s_gs().parameter_count().unwrap(), 32_901_514);
    assert_eq!(SitConfig::sit_cpu().parameter_count().unwrap(), 1_300_778);
    // spec 10.3: 0.15 M of SiT-XL is the unused pos_embed
    let specs = SitConfig::sit_xl_gs().param_specs().unwrap();
    assert_eq!((specs[0].name.as_str(), specs[0].numel(), specs[0].used), ("pos_embed", 128 * 1152, false));
}

#[test]
fn names_follow_the_official_state_dict_order() {
    let cfg = SitConfig { depth: 2, ..SitConfig::sit_cpu() };
    let names: Vec<String> = cfg.param_specs().unwrap().into_iter().map(|s| s.name).collect();
    let block = |i: usize| {
        ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"]
            .iter()
            .flat_map(|m| [format!("blocks.{i}.{m}.weight"), format!("blocks.{i}.{m}.bias")])
            .collect::<Vec<_>>()
    };
    let mut want: Vec<String> = [
        "pos_embed",
        "x_embedder.proj.weight",
        "x_embedder.proj.bias",
        "t_embedder.mlp.0.weight",
        "t_embedder.mlp.0.bias",
        "t_embedder.mlp.2.weight",
        "t_embedder.mlp.2.bias",
        "y_embedder.embedding_table.weight",
        "cond_embedder.0.weight",
        "cond_embedder.0.bias",
        "cond_embedder.2.weight",
        "cond_embedder.2.bias",
    ]
    .map(String::from)
    .to_vec();
    want.extend(block(0));
    want.extend(block(1));
    want.extend(
        [
            "final_layer.linear.weight",
            "final_layer.linear.bias",
            "final_layer.adaLN_modulation.1.weight",
            "final_layer.adaLN_modulation.1.bias",
        ]
        .map(String::from),
    );
    assert_eq!(names, want);
    // the layout model has no cond_embedder and uses pos_embed
    let layout = SitConfig::sit_s_gs().param_specs().unwrap();
    assert!(layout.iter().all(|s| !s.name.starts_with("cond_embedder") && s.used));
    assert_eq!(layout.iter().find(|s| s.name == "y_embedder.embedding_table.weight").unwrap().shape, [1001, 384]);
    assert_eq!(layout.iter().find(|s| s.name == "final_layer.linear.weight").unwrap().shape, [10, 384]);
}

#[test]
fn initialisation_is_the_official_one() {
    let be = CpuBackend::new();
    let mut model = Sit::new(&be, SitConfig::sit_cpu()).unwrap();
    model.init(&be, 1).unwrap();
    let d = SitConfig::sit_cpu().hidden;
    model.params.for_each(|_, spec, value, _| {
        let zero = value.iter().all(|&v| v == 0.0);
        let must_be_zero = spec.name.ends_with(".bias")
            || spec.name.contains("adaLN_modulation")
            || spec.name.starts_with("final_layer")
            || spec.name == "pos_embed";
        assert_eq!(zero, must_be_zero, "{}: zero = {zero}", spec.name);
        match spec.init {
            Init::XavierUniform { fan_in, fan_out } => {
                let bound = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                assert!(value.iter().all(|v| v.abs() <= bound), "{}: outside the xavier bound", spec.name);
            }
            Init::NormalScaled { mean, std } => {
                assert_eq!((mean, std), (0.0, 0.02), "{}", spec.name);
                let var = value.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / value.len() as f64;
                assert!((var.sqrt() - 0.02).abs() < 0.002, "{}: std {}", spec.name, var.sqrt());
            }
            _ => assert!(zero, "{}: {:?}", spec.name, spec.init),
        }
    });
    assert_eq!(model.params.spec(model.params.find("x_embedder.proj.weight").unwrap()).shape, [d, 21, 1, 1]);
}

#[test]
fn timestep_embedding_is_the_glide_sinusoid() {
    let mut out = vec![0.0f32; 2 * 256];
    timestep_embedding(&[0.0, 0.5], 256, &mut out).unwrap();
    assert!(out[..128].iter().all(|&v| v == 1.0) && out[128..256].iter().all(|&v| v == 0.0));
    // k = 1: freq = exp(-ln(10000)/128)
    let f1 = (-(10000f64.ln()) / 128.0).exp();
    assert!((f64::from(out[256 + 1]) - (0.5 * f1).cos()).abs() < 1e-7);
    assert!((f64::from(out[256 + 128 + 1]) - (0.5 * f1).sin()).abs() < 1e-7);
    assert!(timestep_embedding(&[0.0], 256, &mut out).is_err());
}

#[test]
fn bad_inputs_and_configs_are_errors() {
    let be = CpuBackend::new();
    let cfg = SitConfig { tokens: 8, hidden: 32, depth: 1, heads: 2, ..SitConfig::sit_cpu() };
    let model = Sit::new(&be, cfg.clone()).unwrap();
    let mut a = model.activations(&be, 2).unwrap();
    let x = vec![0.0f32; 2 * 21 * 8];
    let cond = vec![0.0f32; 2 * 8 * 5];
    assert!(model.forward(&be, &mut a, &x, &[0.5, 0.5], &[0, 1], Some(&cond)).is_ok());
    assert!(model.forward(&be, &mut a, &x[1..], &[0.5, 0.5], &[0, 1], Some(&cond)).is_err());
    assert!(model.forward(&be, &mut a, &x, &[0.5], &[0, 1], Some(&cond)).is_err());
    assert!(model.forward(&be, &mut a, &x, &[0.5, 0.5], &[0, 11], Some(&cond)).is_err(), "label above null");
    assert!(model.forward(&be, &mut a, &x, &[0.5, 0.5], &[0, 10], Some(&cond)).is_ok(), "the null label");
    assert!(model.forward(&be, &mut a, &x, &[0.5, 0.5], &[0, 1], None).is_err(), "texture model without cond");
    assert!(model.forward(&be, &mut a, &x, &[0.5, 0.5], &[0, 1], Some(&cond[1..])).is_err());
    for bad in [
        SitConfig { heads: 5, ..cfg.clone() },
        SitConfig { hidden: 0, ..cfg.clone() },
        SitConfig { class_dropout_prob: 1.0, ..cfg.clone() },
        SitConfig { cond_channels: Some(0), ..cfg.clone() },
    ] {
        assert!(Sit::new(&be, bad.clone()).is_err(), "{bad:?}");
        assert!(bad.parameter_count().is_err());
    }
}

#[test]
fn checkpoints_round_trip_with_their_statistics() {
    let be = CpuBackend::new();
    let cfg = SitConfig { tokens: 8, hidden: 32, depth: 1, heads: 2, ..SitConfig::sit_cpu() };
    let mut model = Sit::new(&be, cfg.clone()).unwrap();
    model.init(&be, 3).unwrap();
    let stats = LatentStats::m128();
    let bytes = model.save_checkpoint(&be, Some(&stats)).unwrap();
    let mut other = Sit::new(&be, cfg.clone()).unwrap();
    assert_eq!(other.load_checkpoint(&be, &bytes).unwrap(), Some(stats));
    for id in 0..model.params.len() {
        assert_eq!(model.params.value(id), other.params.value(id), "{}", model.params.spec(id).name);
    }
    // without statistics
    let plain = model.save_checkpoint(&be, None).unwrap();
    assert_eq!(other.load_checkpoint(&be, &plain).unwrap(), None);
    // statistics for the wrong channel count, another config, garbage
    let wrong = LatentStats { mean: vec![0.0; 5], std: vec![1.0; 5] };
    assert!(model.load_checkpoint(&be, &model.save_checkpoint(&be, Some(&wrong)).unwrap()).is_err());
    let mut deeper = Sit::new(&be, SitConfig { depth: 2, ..cfg }).unwrap();
    match deeper.load_checkpoint(&be, &bytes) {
        Err(WeightsError::Mismatch { missing, .. }) => assert_eq!(missing.len(), 10, "{missing:?}"),
        other => panic!("expected missing keys, got {other:?}"),
    }
    assert!(deeper.load_checkpoint(&be, b"not a checkpoint").is_err());
}

#[test]
fn latent_statistics_normalise_and_invert() {
    let (tokens, c) = (4, 3);
    let mut rng = TestRng::new(2);
    let rows: Vec<f32> = (0..2 * tokens * c).map(|i| (i % c) as f32 * 10.0 + rng.normal() as f32).collect();
    let stats = LatentStats::from_token_rows(&rows, c).unwrap();
    for ch in 0..c {
        let vals: Vec<f64> = rows.iter().skip(ch).step_by(c).map(|&v| f64::from(v)).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
        assert!((f64::from(stats.mean[ch]) - mean).abs() < 1e-5 && (f64::from(stats.std[ch]) - std).abs() < 1e-5);
    }
    let mut z = vec![0.0; rows.len()];
    stats.normalize(&rows, tokens, &mut z).unwrap();
    // [B, C, N]: channel 1 of sample 0 is z[4..8]
    assert!((z[tokens] - (rows[1] - stats.mean[1]) / stats.std[1]).abs() < 1e-6);
    let mut back = vec![0.0; rows.len()];
    stats.denormalize(&z, tokens, &mut back).unwrap();
    assert!(rows.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-4));
    assert!(LatentStats::from_token_rows(&[1.0, 1.0, 1.0, 1.0], 2).is_err(), "constant channel");
    assert!(stats.normalize(&rows[1..], tokens, &mut z[1..]).is_err());
}
