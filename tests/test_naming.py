"""Every naming convention maps to ComfyUI's key, with its block: literal expectations per convention."""

from __future__ import annotations

import pytest

from lorawb_core.key_targets import canonical_target, normalise_native_dit, parse_module_key, redot
from lorawb_core.layouts import family_map

CASES = [
    # (family, module key as in the file, canonical target, block)
    ("sd15", "lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_k",
     "diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k", "IN02"),
    ("sd15", "lora_unet_down_blocks_1_resnets_0_conv1", "diffusion_model.input_blocks.4.0.in_layers.2", "IN04"),
    ("sd15", "lora_unet_down_blocks_2_downsamplers_0_conv", "diffusion_model.input_blocks.9.0.op", "IN09"),
    ("sd15", "lora_unet_mid_block_resnets_1_time_emb_proj", "diffusion_model.middle_block.2.emb_layers.1", "M00"),
    ("sd15", "lora_unet_up_blocks_0_upsamplers_0_conv", "diffusion_model.output_blocks.2.1.conv", "OUT02"),
    ("sd15", "lora_unet_up_blocks_1_upsamplers_0_conv", "diffusion_model.output_blocks.5.2.conv", "OUT05"),
    ("sd15", "lora_unet_up_blocks_3_attentions_2_proj_out", "diffusion_model.output_blocks.11.1.proj_out", "OUT11"),
    ("sd15", "lora_te_text_model_encoder_layers_11_mlp_fc2", "clip_l.transformer.text_model.encoder.layers.11.mlp.fc2",
     "BASE"),
    ("sd15", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out",
     "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0", "IN01"),
    ("sd15", "text_encoder.encoder.layers.0.self_attn.q_proj",
     "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj", "BASE"),
    ("sd2", "lora_te_text_model_encoder_layers_22_self_attn_out_proj",
     "clip_h.transformer.text_model.encoder.layers.22.self_attn.out_proj", "BASE"),
    ("sdxl", "lora_unet_output_blocks_2_2_conv", "diffusion_model.output_blocks.2.2.conv", "OUT02"),
    ("sdxl", "lora_unet_up_blocks_1_upsamplers_0_conv", "diffusion_model.output_blocks.5.2.conv", "OUT05"),
    ("sdxl", "lora_unet_down_blocks_2_attentions_1_transformer_blocks_9_ff_net_0_proj",
     "diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.0.proj", "IN08"),
    ("sdxl", "lora_te2_text_model_encoder_layers_31_mlp_fc1", "clip_g.transformer.text_model.encoder.layers.31.mlp.fc1",
     "BASE"),
    ("flux", "lora_unet_double_blocks_7_img_attn_qkv", "diffusion_model.double_blocks.7.img_attn.qkv", "D07"),
    ("flux", "lora_unet_single_blocks_37_modulation_lin", "diffusion_model.single_blocks.37.modulation.lin", "S37"),
    ("flux", "lora_unet_final_layer_adaLN_modulation_1", "diffusion_model.final_layer.adaLN_modulation.1", "OUT"),
    ("flux", "lora_unet_guidance_in_in_layer", "diffusion_model.guidance_in.in_layer", "IN"),
    ("flux", "diffusion_model.double_blocks.0.txt_mlp.2", "diffusion_model.double_blocks.0.txt_mlp.2", "D00"),
    ("flux", "transformer.transformer_blocks.3.attn.add_k_proj", "diffusion_model.double_blocks.3.txt_attn.qkv[3072:6144]",
     "D03"),
    ("flux", "transformer.single_transformer_blocks.5.proj_mlp", "diffusion_model.single_blocks.5.linear1[9216:21504]",
     "S05"),
    ("flux", "transformer.time_text_embed.guidance_embedder.linear_2", "diffusion_model.guidance_in.out_layer", "IN"),
    ("flux", "lora_transformer_single_transformer_blocks_2_attn_to_v",
     "diffusion_model.single_blocks.2.linear1[6144:9216]", "S02"),
    ("flux", "lycoris_transformer_blocks_18_ff_context_net_2", "diffusion_model.double_blocks.18.txt_mlp.2", "D18"),
    ("flux", "double_blocks.4.processor.qkv_lora2", "diffusion_model.double_blocks.4.txt_attn.qkv", "D04"),
    ("flux", "lora_te1_text_model_encoder_layers_0_self_attn_v_proj",
     "clip_l.transformer.text_model.encoder.layers.0.self_attn.v_proj", "CLIP"),
    ("flux", "lora_te3_encoder_block_23_layer_1_DenseReluDense_wi_0",
     "t5xxl.transformer.encoder.block.23.layer.1.DenseReluDense.wi_0", "T5"),
    ("flux", "lora_te2_encoder_block_0_layer_0_SelfAttention_q",
     "t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q", "T5"),
    ("sd3", "lora_unet_joint_blocks_23_context_block_adaLN_modulation_1",
     "diffusion_model.joint_blocks.23.context_block.adaLN_modulation.1", "J23"),
    ("sd3", "transformer.transformer_blocks.0.attn.to_k", "diffusion_model.joint_blocks.0.x_block.attn.qkv[1536:3072]",
     "J00"),
    ("sd3", "transformer.pos_embed.proj", "diffusion_model.x_embedder.proj", "IN"),
    ("wan", "lora_unet_blocks_29_cross_attn_k_img", "diffusion_model.blocks.29.cross_attn.k_img", "B29"),
    ("wan", "lora_unet__blocks_0_cross_attn_k", "diffusion_model.blocks.0.cross_attn.k", "B00"),
    ("wan", "diffusion_model.blocks.3.ffn.2", "diffusion_model.blocks.3.ffn.2", "B03"),
    ("wan", "transformer.blocks.1.attn2.add_v_proj", "diffusion_model.blocks.1.cross_attn.v_img", "B01"),
    ("wan", "transformer.condition_embedder.time_proj", "diffusion_model.time_projection.1", "IN"),
    ("wan", "lora_unet_head_head", "diffusion_model.head.head", "OUT"),
    ("hunyuan_video", "lora_unet_double_blocks_19_img_mlp_fc1", "diffusion_model.double_blocks.19.img_mlp.0", "D19"),
    ("hunyuan_video", "lora_unet_single_blocks_39_modulation_linear",
     "diffusion_model.single_blocks.39.modulation.lin", "S39"),
    ("hunyuan_video", "transformer.context_embedder.token_refiner.refiner_blocks.0.attn.to_q",
     "diffusion_model.txt_in.token_refiner.refiner_blocks.0.attn.to_q", "IN"),
]
_SHAPES = {"add_k_proj": (3072, 3072), "proj_mlp": (12288, 3072), "to_v": (3072, 3072)}


@pytest.mark.parametrize("family,key,target,block", CASES)
def test_canonical_target_and_block(family, key, target, block):
    raw = parse_module_key(key)
    if raw.component == "unet":
        raw = type(raw)(raw.component, normalise_native_dit(raw.path), raw.convention)
    out_rows, in_cols = next((v for k, v in _SHAPES.items() if key.endswith(k)), (0, 0))
    if family == "sd3":
        out_rows, in_cols = 1536, 1536
    t = canonical_target(raw, family, out_rows, in_cols)
    assert str(t) == target
    depth = 30 if family == "wan" else None
    assert family_map(family, depth).block_of(t.key) == block


def test_redot_compounds():
    assert redot("time_text_embed_timestep_embedder_linear_1") == "time_text_embed.timestep_embedder.linear_1"
    assert redot("text_model_encoder_layers_0_self_attn_q_proj") == "text_model.encoder.layers.0.self_attn.q_proj"
