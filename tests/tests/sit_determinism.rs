//! A whole generator training step (flow-matching draws, forward, velocity loss, backward, Adam)
//! is bit-identical for 1 and 2 CPU threads and repeatable; seeded sampling gives the same
//! samples for the same seed.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_core::backend::{AdamConfig, Buffers, OptimOps};
use gpstoken_core::model::sit::{
    CondNoise, FlowScratch, GenerateRequest, Guidance, Sampler, SdeConfig, Sit, SitConfig, TrainingBatch,
};
use gpstoken_core::rng::SplitMix64;
use gpstoken_tests::TestRng;

const BATCH: usize = 4;
const STEPS: u32 = 2;

/// The CPU texture config: every part of SiT-XL/2-gs at width 128, depth 4, 32 tokens.
fn config() -> SitConfig {
    SitConfig::sit_cpu()
}

/// Losses and every parameter value after `STEPS` Adam steps, as bits.
fn train(be: &CpuBackend) -> (Vec<u64>, Vec<Vec<u32>>) {
    let cfg = config();
    let mut model = Sit::new(be, cfg.clone()).unwrap();
    model.init(be, 7).unwrap();
    let mut rng = TestRng::new(11);
    let per = cfg.in_channels * cfg.tokens;
    let x1: Vec<f32> = (0..BATCH * per).map(|_| rng.normal() as f32).collect();
    let cond: Vec<f32> = (0..BATCH * cfg.tokens * 5).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let labels: Vec<u32> = (0..BATCH as u32).map(|b| b % cfg.classes as u32).collect();
    let batch = TrainingBatch { x1: &x1, labels: &labels, cond: Some(&cond) };
    let mut acts = model.activations(be, BATCH).unwrap();
    let mut flow_rng = SplitMix64::new(3);
    let mut scratch = FlowScratch::default();
    let lens: Vec<usize> = model.params.specs().iter().map(|s| s.numel()).collect();
    let mut ms: Vec<Vec<f32>> = lens.iter().map(|&n| be.zeros(n).unwrap()).collect();
    let mut vs: Vec<Vec<f32>> = lens.iter().map(|&n| be.zeros(n).unwrap()).collect();
    let adam = AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut losses = Vec::new();
    for step in 1..=STEPS {
        let loss =
            model.training_step(be, &mut acts, batch, CondNoise::Additive(0.5), &mut flow_rng, &mut scratch).unwrap();
        losses.push(loss.to_bits());
        let mut tensors = model.params.adam_tensors(ms.iter_mut().zip(vs.iter_mut()).map(Some));
        be.adam_step_many(&adam, step, &mut tensors).unwrap();
    }
    // the zero-initialised adaLN-Zero output layer learned something: the gradient reaches it
    let id = model.params.find("final_layer.linear.weight").unwrap();
    assert!(model.params.value(id).iter().any(|&v| v != 0.0), "the final layer is still zero");
    let mut params = Vec::new();
    model.params.for_each(|_, _, v, _| params.push(v.iter().map(|x| x.to_bits()).collect()));
    (losses, params)
}

#[test]
fn training_step_is_bit_identical_for_1_and_2_threads() {
    let one = train(&CpuBackend::with_threads(1).unwrap());
    let two = train(&CpuBackend::with_threads(2).unwrap());
    assert!(one.0.iter().all(|&l| f64::from_bits(l).is_finite() && f64::from_bits(l) > 0.0), "losses {:?}", one.0);
    assert_eq!(one.0, two.0, "losses differ between 1 and 2 threads");
    assert!(one.1 == two.1, "parameters differ between 1 and 2 threads");
    let again = train(&CpuBackend::with_threads(2).unwrap());
    assert_eq!(one, again, "a repeated run differs");
}

#[test]
fn seeded_generation_repeats_and_depends_on_the_seed() {
    let texture = SitConfig { tokens: 16, hidden: 64, depth: 1, ..config() };
    let layout = SitConfig { in_channels: 5, cond_channels: None, ..texture.clone() };
    for cfg in [texture, layout] {
        generation_repeats(cfg);
    }
}

fn generation_repeats(cfg: SitConfig) {
    let be = CpuBackend::with_threads(2).unwrap();
    let mut model = Sit::new(&be, cfg.clone()).unwrap();
    model.init(&be, 5).unwrap();
    // adaLN-Zero makes a fresh model output zero; give the zero layers values
    let mut rng = TestRng::new(1);
    model.params.for_each_mut(|_, spec, value, _| {
        let host: Vec<f32> = (0..spec.numel()).map(|_| 0.05 * rng.normal() as f32).collect();
        be.write(value, &host).unwrap();
    });
    let labels = [1u32, 3];
    let cond: Option<Vec<f32>> =
        cfg.cond_channels.map(|c| (0..labels.len() * cfg.tokens * c).map(|i| (i % 7) as f32 * 0.1).collect());
    let samplers = [Sampler::Sde(SdeConfig::official(6)), Sampler::dopri5(3)];
    for sampler in samplers {
        for guidance in [None, Some(Guidance::generate_sh())] {
            let req = GenerateRequest { labels: &labels, cond: cond.as_deref(), sampler, guidance };
            let mut acts = model.generate_activations(&be, labels.len(), guidance.is_some()).unwrap();
            let run = |seed: u64, acts: &mut _| model.generate(&be, acts, &req, &mut SplitMix64::new(seed)).unwrap();
            let a = run(9, &mut acts);
            let b = run(9, &mut acts);
            let c = run(10, &mut acts);
            assert_eq!(a.len(), labels.len() * cfg.in_channels * cfg.tokens);
            assert!(a.iter().all(|v| v.is_finite()), "{sampler:?} {guidance:?}: non-finite sample");
            assert_eq!(a, b, "{sampler:?} {guidance:?}: same seed, different samples");
            assert_ne!(a, c, "{sampler:?} {guidance:?}: different seeds, same samples");
        }
    }
}
