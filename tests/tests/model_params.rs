//! Parameter specs, counts, initialisation and the strict safetensors loader/saver.

use std::collections::BTreeMap;

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::Buffers;
use gpstoken_core::model::{
    load_safetensors, read_metadata, save_safetensors, save_safetensors_with_metadata, GpsToken, Init, ModelConfig,
    WeightsError,
};
use safetensors::tensor::{Dtype, TensorView};

#[test]
fn parameter_counts_match_spec_7_2_without_allocating() {
    assert_eq!(ModelConfig::s64().parameter_count().unwrap(), 128_663_478);
    assert_eq!(ModelConfig::m128().parameter_count().unwrap(), 128_663_478);
    assert_eq!(ModelConfig::l256().parameter_count().unwrap(), 128_745_414);
    // The golden file holds 1,244,434 values in 129 tensors.
    assert_eq!(ModelConfig::golden().parameter_count().unwrap(), 1_244_434);
    assert_eq!(ModelConfig::golden().param_specs().unwrap().len(), 129);
    // Issue 12's training-step benchmark model (its official yaml in docs/MODEL.md).
    assert_eq!(ModelConfig::cpu_tiny().parameter_count().unwrap(), 3_251_356);
}

/// Per-component counts of spec 7.2, by state-dict prefix.
#[test]
fn component_counts_match_spec_7_2() {
    for (cfg, to_gps, conv_in, decoder) in
        [(ModelConfig::m128(), 10_773, 74_240, 33_020_675), (ModelConfig::l256(), 18_981, 147_968, 33_094_403)]
    {
        let specs = cfg.param_specs().unwrap();
        let sum =
            |prefix: &str| -> usize { specs.iter().filter(|s| s.name.starts_with(prefix)).map(|s| s.numel()).sum() };
        assert_eq!(sum("preprocess_img."), 726_272);
        assert_eq!(sum("preprocess_img.1.temb_proj.") + sum("preprocess_img.2.temb_proj."), 131_328);
        assert_eq!(sum("roialign_layer."), 66_048);
        assert_eq!(sum("gps_embed."), 512);
        assert_eq!(sum("gps_embed_layer."), 265_728);
        assert_eq!(sum("attnblocks."), 94_573_470);
        assert_eq!(sum("attnblocks.7."), 3_152_449);
        assert_eq!(sum("to_gps."), to_gps);
        assert_eq!(sum("decoder."), decoder);
        assert_eq!(sum("decoder.conv_in."), conv_in);
        assert_eq!(sum("decoder.mid."), 10_494_976);
        assert_eq!(sum("decoder.up.2."), 16_524_800);
        assert_eq!(sum("decoder.up.1."), 4_855_296);
        assert_eq!(sum("decoder.up.0."), 1_067_648);
        assert_eq!(sum("decoder.norm_out."), 256);
        assert_eq!(sum("decoder.conv_out."), 3_459);
    }
}

/// Spec Appendix A written out independently of the model code: every key and shape of M128.
fn appendix_a(c: usize) -> BTreeMap<String, Vec<usize>> {
    let mut m = BTreeMap::new();
    let mut add = |k: String, s: &[usize]| assert!(m.insert(k, s.to_vec()).is_none());
    add("preprocess_img.0.weight".into(), &[128, 3, 3, 3]);
    add("preprocess_img.0.bias".into(), &[128]);
    for i in 1..=2 {
        for n in ["norm1", "norm2"] {
            add(format!("preprocess_img.{i}.{n}.weight"), &[128]);
            add(format!("preprocess_img.{i}.{n}.bias"), &[128]);
        }
        for n in ["conv1", "conv2"] {
            add(format!("preprocess_img.{i}.{n}.weight"), &[128, 128, 3, 3]);
            add(format!("preprocess_img.{i}.{n}.bias"), &[128]);
        }
        add(format!("preprocess_img.{i}.temb_proj.weight"), &[128, 512]);
        add(format!("preprocess_img.{i}.temb_proj.bias"), &[128]);
    }
    add("roialign_layer.weight".into(), &[512, 128, 1, 1]);
    add("roialign_layer.bias".into(), &[512]);
    add("gps_embed.weight".into(), &[1, 512]);
    add("gps_embed_layer.0.weight".into(), &[512, 5]);
    add("gps_embed_layer.0.bias".into(), &[512]);
    add("gps_embed_layer.2.weight".into(), &[512, 512]);
    add("gps_embed_layer.2.bias".into(), &[512]);
    for k in 0..30 {
        let p = format!("attnblocks.{k}");
        add(format!("{p}.roimlp.weight"), &[1, 64]);
        add(format!("{p}.roimlp.bias"), &[1]);
        for n in ["ln1", "ln2"] {
            add(format!("{p}.{n}.weight"), &[512]);
            add(format!("{p}.{n}.bias"), &[512]);
        }
        add(format!("{p}.attn1.in_proj_weight"), &[1536, 512]);
        add(format!("{p}.attn1.in_proj_bias"), &[1536]);
        add(format!("{p}.attn1.out_proj.weight"), &[512, 512]);
        add(format!("{p}.attn1.out_proj.bias"), &[512]);
        add(format!("{p}.mlp.0.weight"), &[2048, 512]);
        add(format!("{p}.mlp.0.bias"), &[2048]);
        add(format!("{p}.mlp.2.weight"), &[512, 2048]);
        add(format!("{p}.mlp.2.bias"), &[512]);
    }
    add("to_gps.0.weight".into(), &[5, 512]);
    add("to_gps.0.bias".into(), &[5]);
    add("to_gps.1.weight".into(), &[c, 512]);
    add("to_gps.1.bias".into(), &[c]);
    add("decoder.conv_in.weight".into(), &[512, c, 3, 3]);
    add("decoder.conv_in.bias".into(), &[512]);
    // a ResnetBlockNP: norms sized by input (norm1) and output (norm2)
    let mut block = |p: String, cin: usize, cout: usize| {
        add(format!("{p}.norm1.weight"), &[cin]);
        add(format!("{p}.norm1.bias"), &[cin]);
        add(format!("{p}.conv1.weight"), &[cout, cin, 3, 3]);
        add(format!("{p}.conv1.bias"), &[cout]);
        add(format!("{p}.norm2.weight"), &[cout]);
        add(format!("{p}.norm2.bias"), &[cout]);
        add(format!("{p}.conv2.weight"), &[cout, cout, 3, 3]);
        add(format!("{p}.conv2.bias"), &[cout]);
        if cin != cout {
            add(format!("{p}.nin_shortcut.weight"), &[cout, cin, 1, 1]);
            add(format!("{p}.nin_shortcut.bias"), &[cout]);
        }
    };
    block("decoder.mid.block_1".into(), 512, 512);
    block("decoder.mid.block_2".into(), 512, 512);
    for j in 0..3 {
        block(format!("decoder.up.2.block.{j}"), 512, 512);
        block(format!("decoder.up.1.block.{j}"), if j == 0 { 512 } else { 256 }, 256);
        block(format!("decoder.up.0.block.{j}"), if j == 0 { 256 } else { 128 }, 128);
    }
    add("decoder.mid.attn_1.norm.weight".into(), &[512]);
    add("decoder.mid.attn_1.norm.bias".into(), &[512]);
    for n in ["q", "k", "v", "proj_out"] {
        add(format!("decoder.mid.attn_1.{n}.weight"), &[512, 512, 1, 1]);
        add(format!("decoder.mid.attn_1.{n}.bias"), &[512]);
    }
    add("decoder.up.2.upsample.conv.weight".into(), &[512, 512, 3, 3]);
    add("decoder.up.2.upsample.conv.bias".into(), &[512]);
    add("decoder.up.1.upsample.conv.weight".into(), &[256, 256, 3, 3]);
    add("decoder.up.1.upsample.conv.bias".into(), &[256]);
    add("decoder.norm_out.weight".into(), &[128]);
    add("decoder.norm_out.bias".into(), &[128]);
    add("decoder.conv_out.weight".into(), &[3, 128, 3, 3]);
    add("decoder.conv_out.bias".into(), &[3]);
    m
}

#[test]
fn m128_and_l256_names_and_shapes_match_appendix_a() {
    for (cfg, c) in [(ModelConfig::m128(), 16), (ModelConfig::l256(), 32)] {
        let specs = cfg.param_specs().unwrap();
        let ours: BTreeMap<String, Vec<usize>> = specs.iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
        assert_eq!(ours.len(), specs.len(), "duplicate names");
        let want = appendix_a(c);
        assert_eq!(want.len(), 565);
        assert_eq!(ours, want);
        // Only temb_proj is unused.
        let unused: Vec<&str> = specs.iter().filter(|s| !s.used).map(|s| s.name.as_str()).collect();
        assert_eq!(
            unused,
            [
                "preprocess_img.1.temb_proj.weight",
                "preprocess_img.1.temb_proj.bias",
                "preprocess_img.2.temb_proj.weight",
                "preprocess_img.2.temb_proj.bias"
            ]
        );
        // State-dict order: GPSToken registers the decoder first, then the encoder modules.
        assert_eq!(specs[0].name, "decoder.conv_in.weight");
        let first = |p: &str| specs.iter().position(|s| s.name.starts_with(p)).unwrap();
        assert!(first("decoder.up.0.") < first("decoder.up.1.") && first("decoder.up.1.") < first("decoder.up.2."));
        assert!(first("decoder.conv_out.") < first("preprocess_img."));
        assert!(first("attnblocks.") < first("gps_embed_layer.") && first("gps_embed_layer.") < first("to_gps."));
    }
}

#[test]
fn configs_validate_and_invalid_ones_name_the_key() {
    for name in ModelConfig::BUILTIN {
        ModelConfig::builtin(name).unwrap().validate().unwrap();
    }
    assert!(ModelConfig::builtin("xl").is_none());
    let mut c = ModelConfig::golden();
    c.decoder.z_channels = 7;
    assert!(c.validate().unwrap_err().to_string().contains("z_channels"));
    let mut c = ModelConfig::golden();
    c.gps.gpsenc_c = 60;
    assert!(c.validate().unwrap_err().to_string().contains("gpsenc_c"));
    let mut c = ModelConfig::golden();
    c.gps.gps_rs = (16, 16);
    assert!(c.validate().unwrap_err().to_string().contains("gps_rs"));
    let mut c = ModelConfig::golden();
    c.decoder.attn_resolutions = vec![32];
    assert!(c.validate().unwrap_err().to_string().contains("attn_resolutions"));
    assert!(c.parameter_count().is_err());
}

fn golden_model(be: &CpuBackend, seed: u64) -> GpsToken<CpuBackend> {
    let mut m = GpsToken::new(be, ModelConfig::golden()).unwrap();
    m.init(be, seed).unwrap();
    m
}

fn values(be: &CpuBackend, m: &GpsToken<CpuBackend>) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    m.params.for_each(|_, spec, v, _| {
        let mut h = vec![0.0; be.len(v)];
        be.download(v, &mut h).unwrap();
        out.push((spec.name.clone(), h));
    });
    out
}

#[test]
fn init_follows_pytorch_defaults_and_is_seeded() {
    let be = CpuBackend::with_threads(1).unwrap();
    let a = values(&be, &golden_model(&be, 7));
    let b = values(&be, &golden_model(&be, 7));
    let c = values(&be, &golden_model(&be, 8));
    assert_eq!(a, b, "same seed, same parameters");
    let specs = ModelConfig::golden().param_specs().unwrap();
    for ((name, v), (_, w)) in a.iter().zip(&c) {
        let spec = specs.iter().find(|s| &s.name == name).unwrap();
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        match spec.init {
            Init::Zeros => assert!(v.iter().all(|&x| x == 0.0), "{name}"),
            Init::Ones => assert!(v.iter().all(|&x| x == 1.0), "{name}"),
            Init::KaimingUniform { fan_in } | Init::BiasUniform { fan_in } => {
                let bound = 1.0 / (fan_in as f32).sqrt();
                // (a tensor of a few values need not come near the bound)
                assert!(max <= bound && (v.len() < 64 || max > 0.9 * bound), "{name}: max {max} bound {bound}");
                assert_ne!(v, w, "{name}: a different seed gives different values");
            }
            Init::XavierUniform { fan_in, fan_out } => {
                let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
                assert!(max <= bound && max > 0.9 * bound, "{name}");
            }
            Init::Normal => {
                let mean = v.iter().sum::<f32>() / v.len() as f32;
                let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32;
                assert!(mean.abs() < 0.5 && (0.5..1.6).contains(&var), "{name}: mean {mean} var {var}");
            }
            // The discriminator's init; the tokenizer has none.
            Init::NormalScaled { .. } => panic!("{name}: the tokenizer uses no scaled normal init"),
        }
    }
    // Spec 5.3: to_gps.0 zero, MHA in_proj xavier with zero biases, norms 1/0, embedding N(0,1).
    let init_of = |n: &str| specs.iter().find(|s| s.name == n).unwrap().init;
    assert_eq!(init_of("to_gps.0.weight"), Init::Zeros);
    assert_eq!(init_of("to_gps.0.bias"), Init::Zeros);
    assert_eq!(init_of("attnblocks.0.attn1.in_proj_weight"), Init::XavierUniform { fan_in: 64, fan_out: 192 });
    assert_eq!(init_of("attnblocks.0.attn1.in_proj_bias"), Init::Zeros);
    assert_eq!(init_of("attnblocks.0.attn1.out_proj.bias"), Init::Zeros);
    assert_eq!(init_of("attnblocks.0.attn1.out_proj.weight"), Init::KaimingUniform { fan_in: 64 });
    assert_eq!(init_of("decoder.conv_in.weight"), Init::KaimingUniform { fan_in: 8 * 9 });
    assert_eq!(init_of("decoder.conv_in.bias"), Init::BiasUniform { fan_in: 8 * 9 });
    assert_eq!(init_of("gps_embed.weight"), Init::Normal);
    assert_eq!(init_of("decoder.norm_out.weight"), Init::Ones);
    assert_eq!(init_of("attnblocks.1.ln2.bias"), Init::Zeros);
}

/// The metadata entries are written in key order, so the same weights always give the same
/// file. safetensors holds them in a `HashMap` whose order is drawn afresh for every map: with
/// five entries, 20 saves in the map's own order would almost surely not all agree.
#[test]
fn saving_with_metadata_gives_the_same_bytes_every_time() {
    let be = CpuBackend::with_threads(1).unwrap();
    let m = golden_model(&be, 3);
    let meta: Vec<(String, String)> = ["zeta", "alpha", "mu", "beta", "path\"q"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), format!("v{i} \\ é")))
        .collect();
    let first = save_safetensors_with_metadata(&be, &m.params, &meta).unwrap();
    for _ in 0..20 {
        assert!(save_safetensors_with_metadata(&be, &m.params, &meta).unwrap() == first, "bytes differ");
    }
    let header_len = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&first[8..8 + header_len]).unwrap();
    let want =
        r#"{"__metadata__":{"alpha":"v1 \\ é","beta":"v3 \\ é","mu":"v2 \\ é","path\"q":"v4 \\ é","zeta":"v0 \\ é"},"#;
    assert!(header.starts_with(want), "{}", &header[..want.len() + 20]);
    assert_eq!(read_metadata(&first, "path\"q").unwrap().as_deref(), Some("v4 \\ é"));
}

#[test]
fn save_load_round_trip_is_exact() {
    let be = CpuBackend::with_threads(1).unwrap();
    let m = golden_model(&be, 3);
    let bytes = save_safetensors(&be, &m.params).unwrap();
    let mut fresh = GpsToken::new(&be, ModelConfig::golden()).unwrap();
    load_safetensors(&be, &mut fresh.params, &bytes).unwrap();
    assert_eq!(values(&be, &m), values(&be, &fresh));
    assert_eq!(save_safetensors(&be, &fresh.params).unwrap(), bytes, "saving is deterministic");
    // The file carries the official names, shapes and f32.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 129);
    let t = st.tensor("decoder.up.0.block.0.nin_shortcut.weight").unwrap();
    assert_eq!((t.dtype(), t.shape()), (Dtype::F32, &[32usize, 64, 1, 1][..]));
}

/// A file holding `tensors` (f32 zeros unless given bytes).
fn file(tensors: &[(String, Vec<usize>, Dtype, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

fn golden_tensors(dtype: Dtype, one: &[u8]) -> Vec<(String, Vec<usize>, Dtype, Vec<u8>)> {
    ModelConfig::golden()
        .param_specs()
        .unwrap()
        .into_iter()
        .map(|s| {
            let n = s.numel();
            (s.name, s.shape, dtype, one.repeat(n))
        })
        .collect()
}

#[test]
fn loader_is_strict_and_names_every_problem() {
    let be = CpuBackend::with_threads(1).unwrap();
    let mut tensors = golden_tensors(Dtype::F32, &1.0f32.to_le_bytes());
    // one missing, one renamed (missing + unexpected), one mis-shaped, one extra
    tensors.retain(|t| t.0 != "decoder.mid.attn_1.k.bias");
    for t in tensors.iter_mut() {
        if t.0 == "attnblocks.1.attn1.in_proj_weight" {
            t.0 = "attnblocks.1.attn1.in_proj.weight".into();
        }
        if t.0 == "decoder.up.1.block.0.conv1.weight" {
            t.1 = vec![64, 64, 1, 9];
        }
    }
    tensors.push(("model_ema.decay".into(), vec![1], Dtype::F32, 0.5f32.to_le_bytes().to_vec()));
    let bytes = file(&tensors);
    let mut m = golden_model(&be, 1);
    let before = values(&be, &m);
    let err = load_safetensors(&be, &mut m.params, &bytes).unwrap_err();
    match &err {
        WeightsError::Mismatch { missing, unexpected, shape, dtype } => {
            let names = |v: &[(String, Vec<usize>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
            assert_eq!(names(missing), ["decoder.mid.attn_1.k.bias", "attnblocks.1.attn1.in_proj_weight"]);
            assert_eq!(names(unexpected), ["attnblocks.1.attn1.in_proj.weight", "model_ema.decay"]);
            assert_eq!(
                shape,
                &[("decoder.up.1.block.0.conv1.weight".to_string(), vec![64, 64, 3, 3], vec![64, 64, 1, 9])]
            );
            assert!(dtype.is_empty());
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let msg = err.to_string();
    for needle in [
        "decoder.mid.attn_1.k.bias",
        "attnblocks.1.attn1.in_proj_weight [192, 64]",
        "attnblocks.1.attn1.in_proj.weight",
        "model_ema.decay",
        "decoder.up.1.block.0.conv1.weight: model [64, 64, 3, 3], file [64, 64, 1, 9]",
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}:\n{msg}");
    }
    assert_eq!(before, values(&be, &m), "a failed load writes nothing");

    // Integer tensors are refused by name; garbage is a format error.
    let mut ints = golden_tensors(Dtype::F32, &0.0f32.to_le_bytes());
    ints[5].2 = Dtype::I32;
    let err = load_safetensors(&be, &mut m.params, &file(&ints)).unwrap_err();
    assert!(err.to_string().contains(&ints[5].0) && err.to_string().contains("I32"), "{err}");
    assert!(matches!(load_safetensors(&be, &mut m.params, b"not a file"), Err(WeightsError::Format(_))));
}

#[test]
fn half_precision_files_are_converted() {
    let be = CpuBackend::with_threads(1).unwrap();
    // 1.0 in bf16 is 0x3F80 and in f16 0x3C00.
    for (dtype, one) in [(Dtype::BF16, 0x3F80u16), (Dtype::F16, 0x3C00u16)] {
        let mut m = GpsToken::new(&be, ModelConfig::golden()).unwrap();
        load_safetensors(&be, &mut m.params, &file(&golden_tensors(dtype, &one.to_le_bytes()))).unwrap();
        assert!(values(&be, &m).iter().all(|(_, v)| v.iter().all(|&x| x == 1.0)), "{dtype:?}");
    }
}
